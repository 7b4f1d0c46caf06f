"""The ``streamrec`` command. Composition happens here: settings are built once and passed down."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamrec.config import Settings, get_settings
from streamrec.errors import ConfigError, StreamrecError
from streamrec.log_options import ColumnsOption, NamesOption, SepOption, log_format

app = typer.Typer(
    name="streamrec",
    help="Real-time recommender on Kafka + Redis. Run `streamrec COMMAND --help` for details.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="Local stack: real Kafka (KRaft) + Redis (+ Prometheus), no Docker.")
topics_app = typer.Typer(help="Kafka topics used by streamrec.")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")


_FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _forward(module: str, prefix: list[str], ctx: typer.Context) -> None:
    """Hand the rest of the command line to a sub-application imported only now (torch and
    ray are heavy; `streamrec --help` and the popularity worker should not pay for them)."""
    import importlib

    sub_app = importlib.import_module(module).app
    command = typer.main.get_command(sub_app)
    # The prefix repeats this command's name inside the sub-application (`train` -> `train`),
    # so usage lines read `streamrec train ...`, not `streamrec train train ...`.
    prog_name = "streamrec" if prefix else f"streamrec {ctx.info_name}"
    try:
        command.main([*prefix, *ctx.args], prog_name=prog_name, standalone_mode=True)
    except StreamrecError as exc:  # e.g. invalid settings, where the sub-command has no handler
        raise _fail(exc) from exc


@app.command("train", context_settings=_FORWARD, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train a SASRec/GRU4Rec model on ML-1M or any log (`streamrec train --help`)."""
    _forward("streamrec.models.cli", ["train"], ctx)


@app.command("evaluate", context_settings=_FORWARD, add_help_option=False)
def evaluate(ctx: typer.Context) -> None:
    """Full-ranking evaluation of a checkpoint or registry version."""
    _forward("streamrec.models.cli", ["evaluate"], ctx)


@app.command("agent", context_settings=_FORWARD, add_help_option=False)
def agent(ctx: typer.Context) -> None:
    """RL re-ranking agent: train, evaluate off-policy, export (`streamrec agent --help`)."""
    _forward("agents.cli", [], ctx)


@app.command("registry", context_settings=_FORWARD, add_help_option=False)
def registry(ctx: typer.Context) -> None:
    """Model registry: list, promote, rollback (`streamrec registry --help`)."""
    _forward("streamrec.models.cli", ["registry"], ctx)


console = Console()


def _settings() -> Settings:
    """The settings, or a one-line error per invalid variable (exit 1)."""
    root = logging.getLogger()
    configure = not root.handlers  # as logging.basicConfig decides
    # before loading, so the warnings about unknown STREAMREC_* variables are formatted
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
    except ConfigError as exc:
        raise _fail(exc) from exc
    if configure:
        root.setLevel(settings.log_level)
    return settings


def _serve_metrics(settings: Settings, process: str) -> None:
    """/metrics of this process on metrics_port + its offset (nothing when metrics_port is 0)."""
    from streamrec import metrics

    if settings.metrics_port:
        port = settings.metrics_port + metrics.PROCESS_PORT_OFFSETS[process]
        metrics.serve(port, settings.metrics_host)


def _fail(exc: Exception) -> typer.Exit:
    """``error: <message>``, one line per line of the message (never wrapped), exit 1."""
    for line in str(exc).splitlines() or [""]:
        console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    return typer.Exit(code=1)


# --- stack -----------------------------------------------------------------------------------


@stack_app.command("up")
def stack_up(
    with_prometheus: Annotated[
        bool, typer.Option("--with-prometheus", help="Also start Prometheus.")
    ] = False,
) -> None:
    """Start Kafka and Redis (idempotent) and wait until both answer."""
    from streamrec.stack import Stack

    settings = _settings()
    try:
        statuses = Stack(settings, with_prometheus=with_prometheus).up()
    except StreamrecError as exc:
        raise _fail(exc) from exc
    _print_status(statuses)


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Download Kafka's jars from Maven Central into the cache (once per version)."""
    from streamrec.stack.kafka import resolve_kafka_jars

    settings = _settings()
    try:
        lib = resolve_kafka_jars(settings)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    console.print(f"Kafka {settings.stack.kafka_version} jars: {lib}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the processes this stack started (data is kept)."""
    from streamrec.stack import Stack

    stopped = Stack(_settings()).down()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each component's state, PID, address and version."""
    from dataclasses import asdict

    from streamrec.stack import Stack

    statuses = Stack(_settings()).status()
    if as_json:
        print(json.dumps([asdict(status) for status in statuses], indent=2))
    else:
        _print_status(statuses)


@stack_app.command("logs")
def stack_logs(
    component: Annotated[str | None, typer.Argument(help="kafka, redis or prometheus.")] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="Lines per component.")] = 40,
) -> None:
    """Show the last lines of the components' logs."""
    from streamrec.stack import Stack

    stack = Stack(_settings())
    known = [comp.name for comp in (stack.kafka, stack.redis, stack.prometheus)]
    if component is not None and component not in known:
        raise typer.BadParameter(
            f"unknown component {component!r}; choose one of: {', '.join(known)}",
            param_hint="'COMPONENT'",
        )
    logs = stack.logs(component, lines)
    if component is not None and component not in logs:  # prometheus, never started
        console.print(f"no log: this stack never started {component}")
    for name, text in logs.items():
        console.rule(name)
        console.print(text, markup=False, highlight=False)


def _print_status(statuses: list[Any]) -> None:
    table = Table("component", "state", "pid", "address", "version", "log")
    for status in statuses:
        color = {"running": "green", "stopped": "yellow"}.get(status.state, "red")
        table.add_row(
            status.name,
            f"[{color}]{status.state}[/]",
            str(status.pid or "-"),
            status.address,
            status.version,
            status.log,
        )
    console.print(table)


# --- topics ----------------------------------------------------------------------------------


TimeoutOption = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for the broker (each request).")
]


@topics_app.command("create")
def topics_create(timeout: TimeoutOption = 30.0) -> None:
    """Create the events, recommendations, rewards and dead-letter topics if missing."""
    from streamrec.client import create_topics

    settings = _settings()
    try:
        result = create_topics(settings, timeout=timeout)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    for name, state in result.items():
        if state in ("created", "exists"):
            state = f"{state} ({settings.topics.all()[name]} partitions)"
        console.print(f"{name}: {state}", soft_wrap=True)


@topics_app.command("counts")
def topics_counts(timeout: TimeoutOption = 10.0) -> None:
    """Records currently held in each streamrec topic."""
    from streamrec.client import topic_counts

    settings = _settings()
    try:
        counts = topic_counts(settings, list(settings.topics.all()), timeout=timeout)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    for name, count in counts.items():
        console.print(f"{name}: {count}")


# --- data ------------------------------------------------------------------------------------


@app.command()
def replay(
    dataset: Annotated[
        str, typer.Option(help="ml-1m or a CSV/TSV/Parquet/JSON Lines path.")
    ] = "ml-1m",
    limit: Annotated[int | None, typer.Option(help="Only the first N events by time.")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second (default: max).")] = None,
    as_type: Annotated[
        str | None, typer.Option(help="Publish every interaction as this event type.")
    ] = None,
    session_gap: Annotated[int, typer.Option(help="Seconds of inactivity that end a session.")] = (
        1800
    ),
    columns: ColumnsOption = None,
    sep: SepOption = None,
    names: NamesOption = None,
) -> None:
    """Publish an interaction log to the events topic in timestamp order."""
    from streamrec.client import EventProducer
    from streamrec.data import load_dataset
    from streamrec.data.replay import iter_events
    from streamrec.data.replay import replay as run_replay

    settings = _settings()
    try:
        frame = load_dataset(dataset, limit=limit, log_format=log_format(columns, sep, names))
        source = Path(dataset).stem if Path(dataset).exists() else dataset
        with EventProducer(settings) as producer:
            sent = run_replay(
                iter_events(frame, source=source, as_type=as_type, session_gap_s=session_gap),
                producer.send,
                total=len(frame),
                rate=rate,
            )
    except StreamrecError as exc:
        raise _fail(exc) from exc
    console.print(f"replayed {sent} events from {dataset} to {settings.topics.events}")


@app.command()
def schema(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the JSON Schema files (default: the package's own, "
            "streamrec/schemas, wherever the command runs)."
        ),
    ] = None,
) -> None:
    """Write the JSON Schemas of events, recommendations and rewards."""
    from streamrec.events import write_schemas

    for path in write_schemas(out or Path(__file__).resolve().parent / "schemas"):
        console.print(str(path))


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="ML-1M events to replay.")] = 20000,
) -> None:
    """Bring up the stack, create topics, replay real ML-1M events and show what arrived."""
    from streamrec.demo import run_demo

    try:
        run_demo(_settings(), events=events, console=console)
    except StreamrecError as exc:
        raise _fail(exc) from exc


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# --- serving ---------------------------------------------------------------------------------


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="faust/worker log level.")] = "info",
) -> None:
    """Run a stream worker (join the consumer group; run several for more partitions)."""
    from streamrec.serving.factory import build_ranker
    from streamrec.stream.app import run_worker

    settings = _settings()
    try:
        ranker = build_ranker(settings)
        sys.argv = [sys.argv[0]]  # faust's Worker reads argv; ours are already parsed
        run_worker(settings, ranker, loglevel=loglevel)  # e.g. PortInUseError for /metrics
    except StreamrecError as exc:
        raise _fail(exc) from exc


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings).")] = None,
) -> None:
    """Serve the HTTP API (recommendations, forget-user, health)."""
    import uvicorn

    from streamrec.serving.api import create_app
    from streamrec.serving.factory import build_ranker

    settings = _settings()
    try:
        ranker = build_ranker(settings)
        _serve_metrics(settings, "api")
    except StreamrecError as exc:
        raise _fail(exc) from exc
    uvicorn.run(
        create_app(settings, ranker),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level=settings.log_level.lower(),
    )


def _user_id(value: str) -> str:
    """A user id as the event contract takes it (streamrec.events: ID_PATTERN, ID_MAX_LENGTH);
    white space around it is not part of it, as in events."""
    import re

    from streamrec.events import ID_MAX_LENGTH, ID_PATTERN

    user_id = value.strip()
    if not user_id:
        raise typer.BadParameter(f"is empty; user ids have 1 to {ID_MAX_LENGTH} characters")
    if len(user_id) > ID_MAX_LENGTH:
        raise typer.BadParameter(
            f"is {len(user_id)} characters; user ids have at most {ID_MAX_LENGTH}"
        )
    if not re.fullmatch(ID_PATTERN, user_id):
        raise typer.BadParameter(
            f"{user_id!r} holds a control character or only white space / invisible characters"
        )
    return user_id


@app.command("forget-user")
def forget_user(
    user_id: Annotated[str, typer.Argument(help="The user to forget.", callback=_user_id)],
) -> None:
    """Remove every trace of a user from state and report what was removed."""
    import asyncio

    from streamrec.state.store import StateStore

    async def _forget() -> dict[str, int]:
        state = StateStore.from_settings(_settings().redis)
        try:
            return await state.forget_user(user_id)
        finally:
            await state.close()

    try:
        removed = asyncio.run(_forget())
    except StreamrecError as exc:
        raise _fail(exc) from exc
    print(json.dumps({"user_id": user_id, "removed": removed}))


@app.command()
def finetune(
    max_events: Annotated[
        int | None, typer.Option(help="Stop after learning from N events (default: run on).")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without input.")
    ] = None,
) -> None:
    """Fine-tune the promoted model from the event stream; promote/roll back under a guard."""
    from streamrec.online.finetuner import FineTuner

    settings = _settings()
    try:
        _serve_metrics(settings, "finetune")  # first: a taken port fails before the model loads
        tuner = FineTuner(settings)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    import signal

    stopping: list[int] = []
    # SIGTERM (systemd, Kubernetes, `kill`) stops like Ctrl-C: the loop ends after the batch
    # in hand, trains what is pending, checkpoints, commits and leaves the consumer group.
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        tuner.run(max_events=max_events, idle_timeout_s=idle_timeout, stop=lambda: bool(stopping))
    except KeyboardInterrupt:
        pass
    finally:
        tuner.close()
