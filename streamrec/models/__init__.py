"""Next-item models (SASRec, GRU4Rec), their training, evaluation and registry.

Only torch, numpy and the project's data layer are imported here; no infrastructure.
"""

from streamrec.models.base import ModelConfig, SequenceModel
from streamrec.models.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from streamrec.models.gru4rec import GRU4Rec
from streamrec.models.sasrec import SASRec

__all__ = [
    "Checkpoint",
    "GRU4Rec",
    "ModelConfig",
    "SASRec",
    "SequenceModel",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
