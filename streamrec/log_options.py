"""Command-line options for reading an interaction log, shared by ``replay``, ``train`` and
``evaluate``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # pandas loads with the loaders, only when a command reads a log
    from streamrec.data.loaders import LogFormat

__all__ = ["ColumnsOption", "NamesOption", "SepOption", "log_format"]

ColumnsOption = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="Which columns are user, item, time (and type, value), e.g. "
        "user=visitorid,item=itemid,time=ts. Unnamed ones are found by their usual names.",
    ),
]
SepOption = Annotated[
    str | None,
    typer.Option("--sep", help="Field separator, e.g. '::' (default: tab for .tsv, else sniffed)."),
]
NamesOption = Annotated[
    str | None,
    typer.Option(
        "--names",
        help="Column names of a log without a header row, e.g. user_id,item_id,value,timestamp.",
    ),
]


def log_format(columns: str | None, sep: str | None, names: str | None) -> LogFormat:
    """The options as a :class:`LogFormat`; a malformed one is a usage error."""
    from streamrec.data.loaders import LogFormat
    from streamrec.errors import DataError

    try:
        return LogFormat.parse(columns, sep=sep, names=names)
    except DataError as exc:
        raise typer.BadParameter(str(exc)) from exc
