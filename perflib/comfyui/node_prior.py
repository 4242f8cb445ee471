"""What a ComfyUI node should cost before a server has run any: a physics prior per node kind,
refitted on the first node times the server records.

- a sampler: a fixed cost per model call plus FLOPs per latent cell per model call (its work);
- a VAE decode or encode: FLOPs per pixel (a tiled one :data:`TILED` times as many); a save or
  scale node: a little per pixel;
- a model loader: reading the weights from disk; anything else: next to nothing.

FLOPs become seconds at the GPU's ``peak_tflops`` (``PERFLIB_GPU_PROFILES``) at
:data:`UTILISATION`, else at a reference GPU's. Every constant is a published order of magnitude
(an SD1.5 UNet call at 512×512 is about 0.8 TFLOP over 4096 latent cells; the SD VAE decoder
about 1.2 TFLOP at 512×512), not a fit: :meth:`NodePrior.fit` scales each kind by what the
first recorded nodes of that kind took (sum over sum), and a kind not seen yet by all of them
together, so a CPU or a small model is priced right after its first prompt.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from perflib.comfyui.node_costs import NodeObservation
from perflib.config import GpuProfile

REFERENCE_TFLOPS = 80.0  # a current data-centre or high-end consumer GPU, dense FP16
UTILISATION = 0.4  # share of peak a diffusion model sustains
FLOPS = {"sampler": 2.0e8, "decode": 4.7e6, "encode": 2.3e6, "pixels": 2.0e4}  # per unit
CALL_SECONDS = 0.005  # launching one model call (kernels, scheduler step)
LOAD_SECONDS = 2.0  # a checkpoint (2-7 GB) from a local disk
SMALL_SECONDS = 0.01  # text encoding, latent creation, conditioning plumbing
TILED = 3.3  # a tiled VAE decode's time over an untiled one's (measured: issue 19)


def node_kind(class_type: str, features: tuple[float, ...]) -> str:
    """sampler, decode, encode, pixels (another node with a pixel size), load or other."""
    if len(features) == 2:
        return "sampler"
    if "Loader" in class_type:
        return "load"
    if len(features) == 1:
        for kind, word in (("decode", "Decode"), ("encode", "Encode")):
            if word in class_type:
                return kind
        return "pixels"
    return "other"


class NodePrior:
    """Prior seconds of a node on one GPU, scaled by what the server's first nodes took."""

    def __init__(self, gpu: GpuProfile | None = None):
        tflops = gpu.peak_tflops if gpu is not None and gpu.peak_tflops else REFERENCE_TFLOPS
        self.flops_per_second = tflops * 1e12 * UTILISATION
        self.scales: dict[str, float] = {}
        self.scale = 1.0  # of the kinds not seen yet
        self.sampler_scales: tuple[float, float] | None = None  # (overhead, work) once fitted

    def physics(self, class_type: str, features: tuple[float, ...]) -> float:
        """Seconds from the constants alone, at this GPU's speed."""
        kind = node_kind(class_type, features)
        if kind == "sampler":
            calls, work = features
            return calls * CALL_SECONDS + work * FLOPS["sampler"] / self.flops_per_second
        if kind in FLOPS:
            tiled = TILED if "Tiled" in class_type else 1.0
            return tiled * features[0] * FLOPS[kind] / self.flops_per_second
        return LOAD_SECONDS if kind == "load" else SMALL_SECONDS

    def seconds(self, class_type: str, features: tuple[float, ...]) -> float:
        kind = node_kind(class_type, features)
        if kind == "sampler" and self.sampler_scales is not None:
            calls, work = self._sampler_parts(features)
            return calls * self.sampler_scales[0] + work * self.sampler_scales[1]
        return self.physics(class_type, features) * self.scales.get(kind, self.scale)

    def _sampler_parts(self, features: tuple[float, ...]) -> tuple[float, float]:
        """A sampler's prior seconds: (per-call overhead, latent work)."""
        return features[0] * CALL_SECONDS, features[1] * FLOPS["sampler"] / self.flops_per_second

    def fit(self, seen: Iterable[NodeObservation]) -> "NodePrior":
        """Scale each kind by (seconds taken) / (prior seconds) over its observations."""
        taken: dict[str, list[float]] = {}
        for one in seen:
            kind = node_kind(one.class_type, one.features)
            pair = taken.setdefault(kind, [0.0, 0.0])
            pair[0] += one.seconds
            pair[1] += self.physics(one.class_type, one.features)
        self.scales = {kind: took / prior for kind, (took, prior) in taken.items() if prior > 0}
        total = [sum(pair[i] for pair in taken.values()) for i in (0, 1)]
        self.scale = total[0] / total[1] if total[1] > 0 else 1.0
        self.sampler_scales = self._fit_sampler([one for one in seen
                                                 if node_kind(one.class_type, one.features)
                                                 == "sampler" and one.seconds > 0])
        return self

    def _fit_sampler(self, seen: list[NodeObservation]) -> tuple[float, float] | None:
        """Scales of a sampler's overhead and work apart (non-negative, least relative error),
        once two samplers of different shapes were seen: a small model spends most of a call on
        overhead, a large one on its latent work."""
        if len(seen) < 2:
            return None
        parts = np.array([self._sampler_parts(one.features) for one in seen])
        seconds = np.array([one.seconds for one in seen])
        if np.linalg.matrix_rank(parts) < 2:
            return None
        from scipy.optimize import nnls

        scales, _ = nnls(parts / seconds[:, None], np.ones(len(seconds)))
        return float(scales[0]), float(scales[1])
