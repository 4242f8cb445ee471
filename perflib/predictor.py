"""The documented import path of the predictor: ``from perflib.predictor import
PerformancePredictor`` (it lives in :mod:`perflib.prediction.predictor`)."""
from perflib.prediction.predictor import PerformancePredictor

__all__ = ["PerformancePredictor"]
