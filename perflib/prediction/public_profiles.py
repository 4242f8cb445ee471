"""Latent geometry of the public architectures users run, from their published configs, matched
by model name.

A name matches on its letters and digits only, lower case (``Wan2.1-T2V-14B`` reads
``wan21t2v14b``); the first pattern that matches answers. Sources (Hugging Face model repos):

- SD 1.5 / SDXL (``stable-diffusion-v1-5``, ``stable-diffusion-xl-base-1.0``, ``vae/config.json``
  with 4 ``block_out_channels``: 8× spatial; a UNet, no patching, attention within a frame).
- SD3 (``stable-diffusion-3-medium-diffusers``: 8× VAE, ``transformer/config.json``
  ``patch_size`` 2) and Flux (``FLUX.1-dev``: 8× VAE, latents packed 2×2): image DiTs, joint
  attention over the whole latent.
- AnimateDiff (``guoyww/animatediff``): the SD 1.5 VAE per frame, no temporal compression;
  motion modules attend along time per pixel and the UNet within each frame (not full 3D).
- Wan 2.1 and Wan 2.2 A14B (``Wan2.1-T2V-14B``: Wan-VAE 4× temporal, 8× spatial, patch 1×2×2);
  Wan 2.2 TI2V-5B (Wan2.2-VAE 4×16×16, patch 1×2×2); full 3D attention.
- HunyuanVideo (``tencent/HunyuanVideo``: causal 3D VAE 4× temporal, 8× spatial, patch 1×2×2).
- LTX-Video (``Lightricks/LTX-Video``: VAE 8× temporal, 32× spatial, patch 1).
- CogVideoX (``THUDM/CogVideoX-5b``: 3D VAE 4× temporal, 8× spatial, patch 2).
- Mochi 1 (``genmo/mochi-1-preview``: VAE 6× temporal, 8× spatial, patch 2).
"""
from __future__ import annotations

import re

from perflib.config import ModelProfile

PROFILE = "profile:"


def _dit(spatial: int, temporal: int, patch: int) -> ModelProfile:
    return ModelProfile(vae_spatial_factor=spatial, vae_temporal_factor=temporal,
                        patch_size=patch, full_attention=True)


UNET = ModelProfile()  # 8× VAE, no temporal compression, patch 1, attention within a frame
PUBLIC_PROFILES: tuple[tuple[str, re.Pattern, ModelProfile], ...] = tuple(
    (arch, re.compile(pattern), profile) for arch, pattern, profile in (
        ("ltx-video", r"ltxv|ltxvideo", _dit(32, 8, 1)),
        ("mochi", r"mochi", _dit(8, 6, 2)),
        ("cogvideox", r"cogvideo", _dit(8, 4, 2)),
        ("hunyuanvideo", r"hunyuanvideo", _dit(8, 4, 2)),
        ("wan2.2-ti2v-5b", r"wan22.*(ti2v|5b)", _dit(16, 4, 2)),
        ("wan2.1", r"wan21|wanvideo", _dit(8, 4, 2)),
        ("wan2.2", r"wan22", _dit(8, 4, 2)),
        ("animatediff", r"animatediff", UNET),
        ("flux", r"flux", _dit(8, 1, 2)),
        ("sd3", r"sd3|stablediffusion3", _dit(8, 1, 2)),
        ("sdxl", r"sdxl|stablediffusionxl", UNET),
        ("sd1.5", r"sd15|sdv15|stablediffusionv?15", UNET),
    ))


def public_profile(name: str) -> tuple[str, ModelProfile] | None:
    """(architecture, profile) of the first public architecture `name` matches, else None."""
    compact = re.sub(r"[^a-z0-9]", "", str(name).lower())
    for arch, pattern, profile in PUBLIC_PROFILES:
        if pattern.search(compact):
            return arch, profile
    return None
