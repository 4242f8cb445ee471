"""Estimates as they travel from a model to the predictor: per job row, the seconds, the
interval, the confidence, where the speed came from (``speed_source``) and where the model's
latent geometry came from (``geometry_source``)."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from perflib.prediction.pooling import SOURCES as POOLING_SOURCES

HEURISTIC = "heuristic"
SPEED_SOURCES = (*POOLING_SOURCES, HEURISTIC)  # what an estimate's speed_source may say


def sound(seconds, low, high, confidence) -> np.ndarray:
    """Per job, whether (seconds, low, high, confidence) can be returned: all finite, the times
    positive."""
    priced = np.asarray([seconds, low, high, confidence], dtype=float)
    return np.isfinite(priced).all(axis=0) & (priced[:3] > 0).all(axis=0)


@dataclass
class PricedJobs:
    """Estimates of some job rows, one array element per row; ``speed_source`` is one of
    SPEED_SOURCES and ``geometry_source`` one of "configured", "inferred", "profile:<arch>",
    "sibling:<name>" or "default" (None where a row is not priced yet)."""

    seconds: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: np.ndarray
    speed_source: np.ndarray
    geometry_source: np.ndarray

    @classmethod
    def unpriced(cls, count: int) -> "PricedJobs":
        """`count` rows, none priced (NaN)."""
        return cls(*(np.full(count, np.nan) for _ in range(4)),
                   speed_source=np.full(count, None, dtype=object),
                   geometry_source=np.full(count, None, dtype=object))

    def __len__(self) -> int:
        return len(self.seconds)

    def sound(self) -> np.ndarray:
        """Per row, whether its estimate can be returned (see :func:`sound`)."""
        return sound(self.seconds, self.low, self.high, self.confidence)

    def rows(self, positions) -> "PricedJobs":
        """The estimates of the rows at `positions` (an index array, a mask or a slice)."""
        return PricedJobs(*(getattr(self, part.name)[positions] for part in fields(self)))

    def fill(self, positions, other: "PricedJobs") -> None:
        """Set the rows at `positions` to `other`'s, in order."""
        for part in fields(self):
            getattr(self, part.name)[positions] = getattr(other, part.name)

    def frame(self, index=None) -> pd.DataFrame:
        """As the columns of :meth:`PerformancePredictor.estimate_batch`."""
        return pd.DataFrame({"predicted_time_seconds": self.seconds, "low": self.low,
                             "high": self.high, "confidence": self.confidence,
                             "speed_source": self.speed_source,
                             "geometry_source": self.geometry_source}, index=index)
