"""Training: the Method/Stage protocol, the one Trainer, checkpoints and fold loaders."""
from .method import Ablation, Method, PredictExtras, Stage, per_utterance_loss, task_loss

__all__ = ["Ablation", "Method", "PredictExtras", "Stage", "per_utterance_loss", "task_loss"]
