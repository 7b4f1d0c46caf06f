"""A model registry in a directory, and a handle that serves whichever version is promoted.

Layout::

    root/
      versions/v0001/{model.safetensors, meta.json, vocab.json, curves.*}
      versions/v0002/...
      CURRENT.json        {"version": "v0002", "stack": [...], "history": [...]}
      .lock               flock'ed around every read-modify-write

* A version directory is assembled under a temporary name and renamed into place, so readers never
  see half a version, and two writers never get the same number.
* ``CURRENT.json`` is replaced atomically (temp file + ``os.replace``). ``stack`` lists promoted
  versions oldest first (current last); :meth:`ModelRegistry.rollback` pops it. ``history`` logs
  every promote/rollback with a timestamp.
* :class:`ModelHandle` loads the promoted version and, when the pointer file changes, loads the new
  one *beside* the old and swaps a reference under a lock: a call that already took the old
  snapshot finishes on it, new calls get the new one, and no request is dropped.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from streamrec.data.sequences import Vocabulary, atomic_write_text
from streamrec.errors import ModelError
from streamrec.models.base import SequenceModel
from streamrec.models.checkpoint import (
    META_FILE,
    MODEL_FILE,
    VOCAB_FILE,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)

__all__ = ["LoadedModel", "ModelHandle", "ModelRegistry", "VersionInfo"]

logger = logging.getLogger(__name__)

_POINTER = "CURRENT.json"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as listed by :meth:`ModelRegistry.list`."""

    version: str
    path: Path
    created_at: str | None
    dataset: str | None
    kind: str | None
    metrics: dict[str, Any]
    vocab_hash: str | None
    is_current: bool


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve, with the registry version it came from."""

    model: SequenceModel
    vocab: Vocabulary
    meta: dict[str, Any]
    version: str


class ModelRegistry:
    """Versioned model artifacts under ``root`` with an atomically updated promotion pointer."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.pointer_path = self.root / _POINTER

    # -- writing -----------------------------------------------------------------------------
    def register(self, checkpoint_dir: str | Path) -> str:
        """Copy a checkpoint directory in as the next version; returns e.g. ``v0003``."""
        source = Path(checkpoint_dir)
        for required in (MODEL_FILE, META_FILE, VOCAB_FILE):
            if not (source / required).is_file():
                raise ModelError(f"{source} is not a checkpoint: {required} is missing")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".staging-"))
        try:
            for item in source.iterdir():
                if item.is_file() and not item.name.startswith("."):
                    shutil.copy2(item, staging / item.name)
            return self._publish(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def save(self, model: SequenceModel, vocab: Vocabulary, meta: dict[str, Any]) -> str:
        """Write a model straight into the registry as the next version."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".staging-"))
        try:
            save_checkpoint(staging, model, vocab, meta)
            return self._publish(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, staging: Path) -> str:
        for _ in range(1000):
            version = f"v{self._last_number() + 1:04d}"
            try:
                staging.rename(self.versions_dir / version)  # fails if a racer took the number
            except OSError:
                continue
            logger.info("registered %s in %s", version, self.root)
            return version
        raise ModelError(f"could not allocate a version number in {self.versions_dir}")

    def _last_number(self) -> int:
        numbers = [int(m.group(1)) for m in map(_VERSION_RE.match, self._version_names()) if m]
        return max(numbers, default=0)

    def promote(self, version: str) -> None:
        """Make ``version`` the one served; the previous one stays on the rollback stack."""
        self.path(version)  # raises when unknown
        with self._locked():
            pointer = self._read_pointer()
            stack: list[str] = pointer.get("stack", [])
            if stack and stack[-1] == version:
                return
            stack.append(version)
            history = [
                *pointer.get("history", []),
                {"action": "promote", "version": version, "at": _now()},
            ]
            self._write_pointer({"version": version, "stack": stack, "history": history})
        logger.info("promoted %s", version)

    def rollback(self) -> str:
        """Return to the previously promoted version and make it current; returns it."""
        with self._locked():
            pointer = self._read_pointer()
            stack: list[str] = pointer.get("stack", [])
            if len(stack) < 2:
                raise ModelError("nothing to roll back to: fewer than two promotions")
            dropped = stack.pop()
            version: str = stack[-1]
            history = [
                *pointer.get("history", []),
                {"action": "rollback", "version": version, "from": dropped, "at": _now()},
            ]
            self._write_pointer({"version": version, "stack": stack, "history": history})
        logger.info("rolled back from %s to %s", dropped, version)
        return version

    # -- reading -----------------------------------------------------------------------------
    def current(self) -> str | None:
        """The promoted version, or None before the first promotion."""
        version = self._read_pointer().get("version")
        return str(version) if version else None

    def history(self) -> builtins.list[dict[str, Any]]:
        """Every promote/rollback, oldest first."""
        return list(self._read_pointer().get("history", []))

    def path(self, version: str) -> Path:
        directory = self.versions_dir / version
        if not _VERSION_RE.match(version) or not (directory / META_FILE).is_file():
            raise ModelError(f"no version {version!r} in {self.root}")
        return directory

    def list(self) -> builtins.list[VersionInfo]:
        """All versions, oldest first."""
        current = self.current()
        infos: builtins.list[VersionInfo] = []
        for version in sorted(self._version_names(), key=lambda name: int(name[1:])):
            meta = read_meta(self.versions_dir / version)
            infos.append(
                VersionInfo(
                    version=version,
                    path=self.versions_dir / version,
                    created_at=meta.get("created_at"),
                    dataset=meta.get("dataset"),
                    kind=meta.get("config", {}).get("kind"),
                    metrics=meta.get("metrics", {}),
                    vocab_hash=meta.get("vocab_hash"),
                    is_current=version == current,
                )
            )
        return infos

    def load(self, version: str | None = None, device: torch.device | str = "cpu") -> LoadedModel:
        """Load ``version`` (default: the promoted one)."""
        version = version or self.current()
        if version is None:
            raise ModelError(f"no version is promoted in {self.root}")
        checkpoint = load_checkpoint(self.path(version), device=device)
        return LoadedModel(checkpoint.model, checkpoint.vocab, checkpoint.meta, version)

    def pointer_signature(self) -> tuple[int, int, int] | None:
        """(inode, mtime_ns, size) of the pointer file; cheap change detection (every update
        is an ``os.replace``, so the inode changes even within one mtime tick)."""
        try:
            stat = self.pointer_path.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    # -- internals ---------------------------------------------------------------------------
    def _version_names(self) -> builtins.list[str]:
        if not self.versions_dir.is_dir():
            return []
        return [
            entry.name
            for entry in self.versions_dir.iterdir()
            if entry.is_dir() and _VERSION_RE.match(entry.name)
        ]

    def _read_pointer(self) -> dict[str, Any]:
        try:
            payload: dict[str, Any] = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {self.pointer_path}: {exc}") from exc
        return payload

    def _write_pointer(self, payload: dict[str, Any]) -> None:
        atomic_write_text(self.pointer_path, json.dumps(payload, indent=2))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


class ModelHandle:
    """The promoted model, reloaded when the registry pointer changes.

    :meth:`get` returns an immutable snapshot; hold it for the whole request. Reload checks run
    at most every ``check_interval_s`` inside :meth:`get`, or in a background thread after
    :meth:`start`. A failing reload is logged and the old model keeps serving.
    """

    def __init__(
        self,
        registry: ModelRegistry | str | Path,
        *,
        device: torch.device | str = "cpu",
        check_interval_s: float = 1.0,
    ) -> None:
        self.registry = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
        self.device = device
        self.check_interval_s = check_interval_s
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._signature: tuple[int, int, int] | None = None
        self._last_check = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh(force=True)

    def get(self) -> LoadedModel:
        """The model to use for one request (checks for a new promotion when due)."""
        if self._thread is None and time.monotonic() - self._last_check >= self.check_interval_s:
            # Never wait for another thread's reload: serve the current model meanwhile.
            self.refresh(blocking=self._loaded is None)
        loaded = self._loaded
        if loaded is None:
            raise ModelError(f"no version is promoted in {self.registry.root}")
        return loaded

    @property
    def version(self) -> str | None:
        loaded = self._loaded
        return loaded.version if loaded else None

    def refresh(self, force: bool = False, *, blocking: bool = True) -> bool:
        """Load the promoted version if the pointer changed; True when a swap happened.

        One reloader at a time; with ``blocking=False`` return False at once if another
        thread is already reloading.
        """
        if not self._reload_lock.acquire(blocking=blocking):
            return False
        try:
            return self._reload(force)
        finally:
            self._reload_lock.release()

    def _reload(self, force: bool) -> bool:
        self._last_check = time.monotonic()
        signature = self.registry.pointer_signature()
        if not force and signature == self._signature:
            return False
        self._signature = signature
        try:
            version = self.registry.current()
            if version is None or (self._loaded and self._loaded.version == version):
                return False
            fresh = self.registry.load(version, device=self.device)
        except ModelError:
            logger.exception("reload failed; keeping version %s", self.version)
            return False
        with self._lock:
            previous, self._loaded = self._loaded, fresh
        logger.info("serving %s (was %s)", fresh.version, previous.version if previous else None)
        return True

    def start(self) -> None:
        """Watch the pointer in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            self.refresh()
