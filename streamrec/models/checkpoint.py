"""Checkpoints: ``model.safetensors`` (state_dict) + ``meta.json`` + ``vocab.json``. No pickle.

``meta.json`` holds ``config`` (the :class:`ModelConfig`), ``vocab_hash``, ``metrics``,
``dataset``, ``created_at`` and whatever else the trainer adds. Loading rebuilds the model from the
config and loads tensors with ``safetensors`` only, refusing a vocabulary whose hash differs.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from streamrec.data.sequences import Vocabulary, atomic_write_text
from streamrec.errors import DataError, ModelError
from streamrec.models.base import ModelConfig, SequenceModel
from streamrec.models.gru4rec import GRU4Rec
from streamrec.models.sasrec import SASRec

__all__ = [
    "META_FILE",
    "MODEL_FILE",
    "VOCAB_FILE",
    "Checkpoint",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
VOCAB_FILE = "vocab.json"


def build_model(config: ModelConfig) -> SequenceModel:
    """A freshly initialised model of ``config.kind``."""
    config.validate()
    return SASRec(config) if config.kind == "sasrec" else GRU4Rec(config)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: model (eval mode), its vocabulary and metadata."""

    model: SequenceModel
    vocab: Vocabulary
    meta: dict[str, Any]
    path: Path


def save_checkpoint(
    directory: str | Path, model: SequenceModel, vocab: Vocabulary, meta: dict[str, Any]
) -> Path:
    """Write the three files into ``directory`` (each atomically) and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if vocab.size != model.n_items:
        raise ModelError(f"vocabulary has {vocab.size} rows but the model {model.n_items}")
    full_meta = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
        "config": model.config.to_dict(),
        "vocab_hash": vocab.content_hash(),
        "format": "streamrec.checkpoint/1",
    }
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    handle, tmp_name = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(state, tmp_name, metadata={"config": json.dumps(model.config.to_dict())})
        os.replace(tmp_name, directory / MODEL_FILE)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    vocab.save(directory / VOCAB_FILE)
    atomic_write_text(directory / META_FILE, json.dumps(full_meta, indent=2, sort_keys=True))
    return directory


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    return meta


def load_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model from ``meta.json`` and load its tensors (safetensors, no pickle)."""
    directory = Path(directory)
    meta = read_meta(directory)
    try:
        vocab = Vocabulary.load(directory / VOCAB_FILE)
    except DataError as exc:
        raise ModelError(f"checkpoint {directory}: {exc}") from exc
    if meta.get("vocab_hash") != vocab.content_hash():
        raise ModelError(f"checkpoint {directory}: vocabulary hash does not match meta.json")
    config = ModelConfig.from_dict(meta["config"])
    model = build_model(config)
    try:
        state = load_file(directory / MODEL_FILE, device=str(device))
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"cannot read {directory / MODEL_FILE}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {directory} does not fit its config: {exc}") from exc
    model.to(device).eval()
    return Checkpoint(model=model, vocab=vocab, meta=meta, path=directory)
