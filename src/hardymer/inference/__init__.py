"""From media to a prediction with a trained run: ``load(run).predict(audio=..., text=...)``."""
from .predictor import PredictError, Predictor, load

__all__ = ["PredictError", "Predictor", "load"]
