"""A ComfyUI API-format prompt (the JSON posted to ``/prompt``) as perflib job parameters.

Links (``["<node id>", <output index>]``) are followed from the output nodes back to every sampling
pass (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced), its latent source (empty
latents in pixels, video latents with ``length`` frames, latent upscales for a hires-fix second
pass, VAE encodes for img2img), its model and LoRAs, and the decoders. Step counts are the
denoiser evaluations ComfyUI really runs (as in ComfyUI v0.8.0's ``comfy/samplers.py`` and
``comfy_extras/nodes_custom_sampler.py``): a KSampler with denoise < 1 still runs ``steps`` on the
tail of a longer schedule; KSamplerAdvanced runs ``min(end_at_step, steps) − start_at_step``;
custom samplers run ``len(sigmas) − 1``. Sizes are in pixels (latent × 8).

Unknown node types never fail a parse: links are followed through reroute-like nodes, and what was
not understood is listed. Malformed input raises ValueError naming the node and input.

Pure standard library, with no perflib imports: the ComfyUI custom node ships this file as is.
"""
from __future__ import annotations

import functools
import graphlib
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

LATENT_FACTOR = 8  # pixels per latent cell for the SD, SDXL, SD3, Flux, Wan and Hunyuan VAEs
MODEL_FILE = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf)$", re.IGNORECASE)

# Samplers that call the model more than once per step (comfy/k_diffusion/sampling.py).
MODEL_CALLS_PER_STEP = {
    "heun": 2, "heunpp2": 2, "dpm_2": 2, "dpm_2_ancestral": 2, "dpmpp_2s_ancestral": 2,
    "dpmpp_2s_ancestral_cfg_pp": 2, "dpmpp_sde": 2, "dpmpp_sde_gpu": 2, "seeds_2": 2,
    "exp_heun_2_x0": 2, "exp_heun_2_x0_sde": 2, "sa_solver_pece": 2, "seeds_3": 3,
}
# Sampler nodes of the custom-sampling family and the k-diffusion sampler each stands for.
SAMPLER_NODES = {
    "SamplerEulerAncestral": "euler_ancestral", "SamplerEulerAncestralCFGPP":
    "euler_ancestral_cfg_pp", "SamplerLMS": "lms", "SamplerDPMPP_SDE": "dpmpp_sde",
    "SamplerDPMPP_2M_SDE": "dpmpp_2m_sde", "SamplerDPMPP_3M_SDE": "dpmpp_3m_sde",
    "SamplerDPMPP_2S_Ancestral": "dpmpp_2s_ancestral", "SamplerDPMAdaptative": "dpm_adaptive",
    "SamplerER_SDE": "er_sde", "SamplerSEEDS2": "seeds_2",
}
IMAGE_LATENTS = {"EmptyLatentImage", "EmptySD3LatentImage", "EmptyFlux2LatentImage",
                 "EmptyHunyuanImageLatent", "EmptyChromaRadianceLatentImage",
                 "EmptyQwenImageLayeredLatentImage"}
VIDEO_LATENTS = {"EmptyHunyuanLatentVideo", "EmptyHunyuanVideo15Latent", "EmptyMochiLatentVideo",
                 "EmptyLTXVLatentVideo", "EmptyCosmosLatentVideo", "EmptyWanLatentVideo",
                 "WanImageToVideo", "WanFirstLastFrameToVideo", "WanFunControlToVideo",
                 "Wan22FunControlToVideo", "WanFunInpaintToVideo", "WanVaceToVideo",
                 "WanCameraImageToVideo", "WanPhantomSubjectToVideo", "WanTrackToVideo",
                 "WanSoundImageToVideo", "WanHuMoImageToVideo", "WanAnimateToVideo",
                 "Wan22ImageToVideoLatent", "HunyuanImageToVideo", "HunyuanVideo15ImageToVideo",
                 "CosmosImageToVideoLatent", "CosmosPredict2ImageToVideoLatent",
                 "LTXVImgToVideo"}
# Latent geometry per video latent class: (frames per latent frame, pixels per latent cell,
# channels), as the class's own node builds its latent in ComfyUI v0.8.0 (comfy_extras/
# nodes_hunyuan.py, nodes_lt.py, nodes_mochi.py, nodes_cosmos.py, nodes_wan.py): e.g.
# EmptyLTXVLatentVideo is zeros([batch, 128, (length-1)//8+1, height//32, width//32]).
VIDEO_GEOMETRY = {"EmptyHunyuanLatentVideo": (4, 8, 16), "EmptyHunyuanVideo15Latent": (4, 16, 32),
                  "EmptyMochiLatentVideo": (6, 8, 12), "EmptyLTXVLatentVideo": (8, 32, 128),
                  "LTXVImgToVideo": (8, 32, 128), "EmptyCosmosLatentVideo": (8, 8, 16),
                  "CosmosImageToVideoLatent": (8, 8, 16),
                  "CosmosPredict2ImageToVideoLatent": (4, 8, 16),
                  "Wan22ImageToVideoLatent": (4, 16, 48), "HunyuanVideo15ImageToVideo": (4, 16, 32)}
DEFAULT_VIDEO_GEOMETRY = (4, 8, 16)  # the Wan 2.1 and HunyuanVideo latents (the other classes)
PIXEL_SIZED = ("VAEDecode", "VAEEncode", "ImageScale", "LatentUpscale", "Save", "Preview")
ENCODERS = {"VAEEncode", "VAEEncodeTiled", "VAEEncodeForInpaint", "InpaintModelConditioning"}
COMBINERS = {"ConditioningCombine"}  # each joins two conditionings: one more UNet batch
CACHE_HIT_JOB_TYPE = "comfyui-cache-hit"  # a prompt ComfyUI served wholly from its cache
CHECKPOINT_LOADERS = {"CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name",
                      "unCLIPCheckpointLoader": "ckpt_name",
                      "ImageOnlyCheckpointLoader": "ckpt_name", "UNETLoader": "unet_name",
                      "DiffusersLoader": "model_path"}
LORA_LOADERS = {"LoraLoader", "LoraLoaderModelOnly"}
IMAGE_LOADERS = {"LoadImage", "LoadImageMask", "LoadImageOutput", "LoadVideo", "ImageFromBatch"}
# Schedulers whose sigmas are `steps` long, and those that cut `denoise` as round(steps·denoise).
SCHEDULERS = {"BasicScheduler": None, "KarrasScheduler": "karras",
              "ExponentialScheduler": "exponential", "PolyexponentialScheduler":
              "polyexponential", "LaplaceScheduler": "laplace", "VPScheduler": "vp",
              "BetaSamplingScheduler": "beta", "SDTurboScheduler": "sd_turbo",
              "AlignYourStepsScheduler": "align_your_steps", "GITSScheduler": "gits",
              "OptimalStepsScheduler": "optimal_steps", "Flux2Scheduler": "flux2",
              "LTXVScheduler": "ltxv"}
ROUNDED_DENOISE = {"AlignYourStepsScheduler", "GITSScheduler", "OptimalStepsScheduler"}
SIGMA_PASSTHROUGH = {"FlipSigmas", "SetFirstSigma"}
GUIDERS = {"CFGGuider", "BasicGuider", "DualCFGGuider"}
# Nodes that only carry something through: the input to follow for each.
PASS_THROUGH = {"Reroute": None, "SetLatentNoiseMask": "samples", "LatentComposite": "samples_to",
                "LatentCompositeMasked": "destination", "LatentBlend": "samples1",
                "LatentAdd": "samples1", "LatentSubtract": "samples1",
                "LatentMultiply": "samples", "LatentInterpolate": "samples1",
                "LatentRotate": "samples", "LatentFlip": "samples",
                "LatentBatchSeedBehavior": "samples", "ImageInvert": "image",
                "ImageSharpen": "image", "ImageBlur": "image", "ModelSamplingSD3": "model",
                "ModelSamplingFlux": "model", "ModelSamplingDiscrete": "model",
                "ModelSamplingAuraFlow": "model", "ModelSamplingContinuousEDM": "model",
                "ModelSamplingLTXV": "model", "CLIPSetLastLayer": "clip"}
KNOWN = (set(CHECKPOINT_LOADERS) | LORA_LOADERS | IMAGE_LATENTS | VIDEO_LATENTS | ENCODERS
         | IMAGE_LOADERS | set(SCHEDULERS) | SIGMA_PASSTHROUGH | GUIDERS | set(SAMPLER_NODES)
         | set(PASS_THROUGH)
         | {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced",
            "KSamplerSelect", "SamplerSASolver", "RandomNoise", "DisableNoise", "SplitSigmas",
            "SplitSigmasDenoise", "ManualSigmas", "LatentUpscale", "LatentUpscaleBy",
            "RepeatLatentBatch", "LatentFromBatch", "LatentBatch", "LatentCrop", "ImageScale",
            "ImageScaleBy", "ImageScaleToTotalPixels", "EmptyImage", "ImageBatch",
            "VAEDecode", "VAEDecodeTiled", "VAELoader", "CLIPLoader", "DualCLIPLoader",
            "TripleCLIPLoader", "CLIPTextEncode", "ConditioningZeroOut", "SaveImage",
            "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveVideo", "SaveWEBM",
            "SaveLatent", "CreateVideo"})
SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
# Known classes that are never an output node, even when nothing consumes them.
NOT_OUTPUTS = KNOWN - {"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG",
                       "SaveVideo", "SaveWEBM", "SaveLatent"}
FOLLOWED_INPUTS = ("samples", "latent", "latent_image", "image", "images", "model", "sigmas")
MAX_NODES = 10_000  # nodes in one prompt; real workflows have a few hundred at most
MAX_SIGMAS_TEXT = 16_384  # characters of a ManualSigmas list (a thousand steps fit easily)
SHOWN_CHARACTERS = 100  # of a value echoed in an error message
# One ManualSigmas number as ComfyUI's own r"[-+]?(?:\d*\.*\d+)" finds them, without its
# backtracking (quadratic on a run of dots): a match counts when it holds a digit.
_SIGMA_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.+\d+)?|\.+\d*)")


def shown(value: Any, quoted: bool = True) -> str:
    """`value` for an error message (its repr, or the text itself when not `quoted`), cut to
    about SHOWN_CHARACTERS: the input may be megabytes long."""
    text = repr(value) if quoted or not isinstance(value, str) else value
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS - 20]}…{text[-10:]} ({len(text):,} characters)"


@dataclass
class Size:
    """What a latent or image holds, in pixels; None where the graph does not say."""

    width: int | None = None
    height: int | None = None
    frame_count: int | None = 1
    batch_size: int | None = None
    source: str = "unknown"
    geometry: tuple[int, int, int] | None = None  # a video latent's (temporal, spatial, channels)

    @property
    def pixels(self) -> int | None:
        """Pixels over every frame and sample, None where the graph does not say."""
        if not (self.width and self.height):
            return None
        return self.width * self.height * (self.frame_count or 1) * (self.batch_size or 1)


@dataclass
class SamplingPass:
    """One run of the denoiser over a latent: its size, how many evaluations, with what."""

    node_id: str
    node_type: str
    width: int | None
    height: int | None
    frame_count: int | None
    batch_size: int | None
    steps: int | None
    denoise: float
    guidance_scale: float | None
    sampler: str | None
    scheduler: str | None
    model_name: str | None
    model_calls_per_step: int
    source: str
    geometry: tuple[int, int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The pass as perflib's job record lists it (what the graph does not say is left
        out)."""
        values = {"width": self.width, "height": self.height, "frame_count": self.frame_count,
                  "batch_size": self.batch_size, "steps": self.steps, "denoise": self.denoise,
                  "guidance_scale": self.guidance_scale, "sampler": self.sampler,
                  "scheduler": self.scheduler, "model_name": self.model_name,
                  "model_calls_per_step": self.model_calls_per_step, "source": self.source}
        if self.geometry:
            values.update(zip(("vae_temporal_factor", "vae_spatial_factor", "latent_channels"),
                              self.geometry))
        return {name: value for name, value in values.items() if value is not None}


@dataclass
class ParsedPrompt:
    """What a prompt asks for: its sampling passes in execution order (base pass first)."""

    passes: list[SamplingPass] = field(default_factory=list)
    model_name: str | None = None
    loras: list[str] = field(default_factory=list)
    decoders: list[str] = field(default_factory=list)
    unknown_nodes: list[str] = field(default_factory=list)
    unknown_sizes: list[str] = field(default_factory=list)  # node ids whose size is unknown
    needed_nodes: set[str] = field(default_factory=set)  # what runs for the outputs
    node_pixels: dict[str, int] = field(default_factory=dict)  # decode, encode, scale, save
    sampler_batches: dict[str, int] = field(default_factory=dict)  # UNet batches per step

    @property
    def pipeline_type(self) -> str:
        return "video" if any((p.frame_count or 1) > 1 for p in self.passes) else "image"

    def mark_cache_use(self, graph: dict, cached_nodes, succeeded: bool,
                       record: dict[str, Any], comfy: dict[str, Any]) -> None:
        """Mark, in a job `record` and its ``extra_params["comfyui"]`` (`comfy`), whether the
        model loaders were served from ComfyUI's cache (``model_loaded``) and whether everything
        was (``cache_hit``: job type :data:`CACHE_HIT_JOB_TYPE`, never a training example). The
        collector and the custom node both mark prompts this way."""
        cached = {str(node) for node in cached_nodes}
        loaders = [node for node in self.needed_nodes
                   if (graph.get(node) or {}).get("class_type") in CHECKPOINT_LOADERS]
        comfy["model_loaded"] = bool(loaders) and set(loaders) <= cached
        comfy["cache_hit"] = succeeded and self.needed_nodes <= cached
        if comfy["cache_hit"]:
            record["job_type"] = CACHE_HIT_JOB_TYPE

    def job_params(self) -> dict[str, Any]:
        """perflib job parameters: the base (first) pass's settings, every pass, and what was
        not understood under ``extra_params["comfyui"]``."""
        base = self.passes[0] if self.passes else None
        return {
            "pipeline_type": self.pipeline_type, "job_type": "comfyui",
            "width": base and base.width, "height": base and base.height,
            "frame_count": base.frame_count if base else 1,
            "batch_size": base.batch_size if base else 1,
            "steps": base and base.steps, "guidance_scale": base and base.guidance_scale,
            "sampler": base and base.sampler,
            "model_name": (base and base.model_name) or self.model_name,
            "passes": [p.as_dict() for p in self.passes],
            "extra_params": {"comfyui": {
                "unknown_nodes": self.unknown_nodes, "loras": self.loras,
                "decoders": self.decoders, "unknown_sizes": self.unknown_sizes,
                "node_pixels": self.node_pixels,
                "sampler_nodes": [p.node_id for p in self.passes],
                "sampler_batches": self.sampler_batches}},
        }


def parse_prompt(prompt: Any, outputs: list[str] | None = None,
                 input_sizes: dict[str, tuple[int, int]] | None = None) -> ParsedPrompt:
    """Parse an API-format prompt, from `outputs` (ComfyUI's ``outputs_to_execute``) or, when
    not given, from every output node (nodes nothing consumes, known intermediates aside).
    `input_sizes`: (width, height) of input files by the name the graph gives them."""
    nodes = _checked(prompt)
    try:
        return _Parser(nodes, input_sizes or {}).parse(outputs)
    except RecursionError:
        raise ValueError("prompt: its links are chained too deeply to follow") from None
    except OverflowError:
        raise ValueError("prompt: a size or scale in the graph is too large") from None


def _checked(prompt: Any) -> dict[str, dict]:
    """The prompt's nodes, after checking its shape and every link."""
    if not isinstance(prompt, dict):
        raise ValueError(f"prompt must be a JSON object of nodes, got {type(prompt).__name__}")
    if len(prompt) > MAX_NODES:
        raise ValueError(f"prompt has {len(prompt):,} nodes, more than the limit of "
                         f"{MAX_NODES:,}")
    nodes = {str(node_id): node for node_id, node in prompt.items()}
    for node_id, node in nodes.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ValueError(f"{_node_named(node_id)}: must be an object with a class_type")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ValueError(f"{_node_named(node_id, node['class_type'])}: inputs must be an "
                             "object")
        for name, value in inputs.items():
            if isinstance(value, list):
                _check_link(nodes, node_id, name, value)
    return nodes


def _check_link(nodes: dict, node_id: str, name: str, link: list) -> None:
    if len(link) != 2 or not isinstance(link[0], (str, int)) or isinstance(link[1], bool) \
            or not isinstance(link[1], int):
        raise ValueError(f"{_node_named(node_id)} input {shown(name)}: a link must be [node id, "
                         f"output index], got {shown(link)}")
    if str(link[0]) not in nodes:
        raise ValueError(f"{_node_named(node_id)} input {shown(name)}: links to node "
                         f"{shown(link[0])}, which is not in the prompt")


def _node_named(node_id: str, class_type: str | None = None) -> str:
    """``node 3 (KSampler)`` for an error message."""
    named = f"node {shown(node_id, quoted=False)}"
    return named if class_type is None else f"{named} ({shown(class_type, quoted=False)})"


def _remembered(method):
    """A :class:`_Parser` method that follows links, run once per node and output in a parse:
    an input shared by thousands of samplers (a long LoRA chain) is followed once."""
    @functools.wraps(method)
    def remembered(self, *args):
        key = (method.__name__, *args)
        if key not in self._followed:
            self._followed[key] = method(self, *args)
        return self._followed[key]
    return remembered


class _Parser:
    """One parse: follows links with memory, collects what it meets."""

    def __init__(self, nodes: dict[str, dict], input_sizes: dict[str, tuple[int, int]]):
        self.nodes = nodes
        self.input_sizes = input_sizes
        self.result = ParsedPrompt()
        self._latents: dict[str, Size] = {}
        self._passes: dict[str, SamplingPass] = {}
        self._visiting: set[str] = set()
        self._followed: dict[tuple, Any] = {}  # what the @_remembered methods found

    def parse(self, outputs: list[str] | None) -> ParsedPrompt:
        outputs = [str(o) for o in outputs] if outputs is not None else self._output_nodes()
        for output in outputs:
            if output not in self.nodes:
                raise ValueError(f"output node {shown(output)} is not in the prompt")
            self._collect_needed(output)
        result = self.result
        needed = sorted(result.needed_nodes, key=_node_order)
        for node_id in needed:
            class_type = self._class(node_id)
            if class_type not in KNOWN and class_type not in result.unknown_nodes:
                result.unknown_nodes.append(class_type)
            if class_type.startswith("VAEDecode"):
                result.decoders.append(class_type)
        samplers = [n for n in needed if self._is_sampler(n)]
        for node_id in samplers:
            self._pass(node_id)
        depth = self._sampler_depths(samplers)
        result.passes = [self._passes[n] for n in sorted(samplers,
                                                         key=lambda n: (depth[n], _node_order(n)))]
        models = [p.model_name for p in result.passes if p.model_name]
        result.model_name = models[0] if models else self._any_model(needed)
        result.node_pixels = {node_id: pixels for node_id in needed
                              if (pixels := self._node_pixels(node_id))}
        result.sampler_batches = {
            one.node_id: conditioning_batches(self.nodes, one.node_id,
                                              (one.guidance_scale or 0) > 1)
            for one in result.passes}
        return result

    def _node_pixels(self, node_id: str) -> int | None:
        """Pixels a decode, encode, scale or save node works on (its output, or its input
        image), None where the graph does not say."""
        class_type, links = self._class(node_id), self._links(node_id)
        if not class_type.startswith(PIXEL_SIZED) or class_type not in KNOWN:
            return None
        if class_type.startswith(("VAEDecode", "ImageScale")):
            return self._image(node_id).pixels
        if class_type.startswith("LatentUpscale"):
            return self._latent(node_id).pixels
        source = links.get("pixels") or links.get("images")
        return self._image(source).pixels if source else None

    # -- the graph ------------------------------------------------------------------------------
    def _class(self, node_id: str) -> str:
        return self.nodes[node_id]["class_type"]

    def _inputs(self, node_id: str) -> dict:
        return self.nodes[node_id].get("inputs", {})

    def _links(self, node_id: str) -> dict[str, str]:
        return {name: str(value[0]) for name, value in self._inputs(node_id).items()
                if isinstance(value, list)}

    def _output_nodes(self) -> list[str]:
        consumed = {target for node_id in self.nodes for target in self._links(node_id).values()}
        return [n for n in self.nodes if n not in consumed and self._class(n) not in NOT_OUTPUTS]

    def _collect_needed(self, start: str) -> None:
        stack = [start]
        while stack:
            node_id = stack.pop()
            if node_id in self.result.needed_nodes:
                continue
            self.result.needed_nodes.add(node_id)
            stack.extend(self._links(node_id).values())

    def _sampler_depths(self, samplers: list[str]) -> dict[str, int]:
        """Per sampler, the most samplers on any path above it (0: a base pass), in one pass
        over the needed nodes in link order: linear in the graph, whatever its depth."""
        is_sampler = set(samplers)
        sorter = graphlib.TopologicalSorter({node_id: self._links(node_id).values()
                                             for node_id in self.result.needed_nodes})
        try:
            order = list(sorter.static_order())
        except graphlib.CycleError as exc:
            node_id = exc.args[1][0]
            raise ValueError(f"{_node_named(node_id, self._class(node_id))}: its links form a "
                             "cycle") from None
        above: dict[str, int] = {}
        for node_id in order:
            above[node_id] = max((above[source] + (source in is_sampler)
                                  for source in self._links(node_id).values()), default=0)
        return {node_id: above[node_id] for node_id in samplers}

    def _is_sampler(self, node_id: str) -> bool:
        if self._class(node_id) in SAMPLERS:
            return True
        # Custom KSampler variants (efficiency packs, pipes): unknown, but shaped like one.
        inputs, links = self._inputs(node_id), self._links(node_id)
        return self._class(node_id) not in KNOWN and "latent_image" in links \
            and "model" in links and isinstance(inputs.get("steps"), int)

    def _value(self, node_id: str, name: str) -> Any:
        """An input's value, through a link to a primitive node (one constant input)."""
        value = self._inputs(node_id).get(name)
        if not isinstance(value, list):
            return value
        source = self._inputs(str(value[0]))
        constants = [v for v in source.values() if not isinstance(v, list)]
        return constants[0] if len(constants) == 1 and len(source) == 1 else None

    def _number(self, node_id: str, name: str, default: float | None = None) -> float | None:
        """A finite number, else `default`."""
        value = self._value(node_id, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            return default
        return value

    def _name(self, node_id: str, name: str) -> str | None:
        """A text input (a sampler, scheduler or file name), else None."""
        value = self._value(node_id, name)
        return value if isinstance(value, str) else None

    def _carrier(self, node_id: str, preferred: str | None = None) -> str | None:
        """The input a reroute-like node passes on: the named one, its only link, or the first
        of the usual carrier inputs."""
        links = self._links(node_id)
        if preferred and preferred in links:
            return preferred
        if len(links) == 1:
            return next(iter(links))
        return next((name for name in FOLLOWED_INPUTS if name in links), None)

    def _follow(self, node_id: str, preferred: str | None = None) -> str | None:
        """The node behind :meth:`_carrier`'s input."""
        carrier = self._carrier(node_id, preferred)
        return None if carrier is None else self._links(node_id)[carrier]

    @contextmanager
    def _visit(self, node_id: str) -> Iterator[None]:
        """While a node's inputs are followed: meeting it again means the links loop."""
        if node_id in self._visiting:
            raise ValueError(f"{_node_named(node_id, self._class(node_id))}: its links form a "
                             "cycle")
        self._visiting.add(node_id)
        try:
            yield
        finally:
            self._visiting.discard(node_id)

    # -- sampling passes ------------------------------------------------------------------------
    def _pass(self, node_id: str) -> SamplingPass:
        if node_id in self._passes:
            return self._passes[node_id]
        links = self._links(node_id)
        with self._visit(node_id):
            size = self._latent(links["latent_image"]) if "latent_image" in links else Size()
            settings = self._settings(node_id)
        guider_model = settings.pop("model")
        model_name = self._model(links["model"]) if "model" in links else guider_model
        sampler = settings["sampler"]
        made = SamplingPass(node_id=node_id, node_type=self._class(node_id), width=size.width,
                            height=size.height, frame_count=size.frame_count,
                            batch_size=size.batch_size, model_name=model_name,
                            model_calls_per_step=MODEL_CALLS_PER_STEP.get(sampler or "", 1),
                            source=size.source, geometry=size.geometry, **settings)
        self._passes[node_id] = made
        return made

    def _settings(self, node_id: str) -> dict[str, Any]:
        """steps, denoise, guidance, sampler, scheduler (and model, for guider-driven passes)."""
        class_type = self._class(node_id)
        if class_type in ("SamplerCustom", "SamplerCustomAdvanced"):
            return self._custom_settings(node_id)
        steps = self._number(node_id, "steps")
        denoise = self._number(node_id, "denoise", 1.0)
        runs = None if steps is None else int(steps) if denoise > 0 else 0
        if class_type == "KSamplerAdvanced" and steps is not None:
            start = int(self._number(node_id, "start_at_step", 0))
            end = int(self._number(node_id, "end_at_step", 10000))
            runs = max(0, min(end, int(steps)) - start)
            denoise = round(max(0.0, 1.0 - start / steps), 4) if steps else 1.0
        return {"steps": runs, "denoise": denoise,
                "guidance_scale": self._number(node_id, "cfg"),
                "sampler": self._name(node_id, "sampler_name"),
                "scheduler": self._name(node_id, "scheduler"), "model": None}

    def _custom_settings(self, node_id: str) -> dict[str, Any]:
        links = self._links(node_id)
        sigmas = self._inputs(node_id).get("sigmas")
        steps, scheduler, denoise = (self._sigmas(str(sigmas[0]), sigmas[1])
                                     if isinstance(sigmas, list) else (None, None, 1.0))
        sampler = self._sampler_name(links["sampler"]) if "sampler" in links else None
        if self._class(node_id) == "SamplerCustom":
            guidance, model = self._number(node_id, "cfg"), None
        else:
            guidance, model = (self._guider(links["guider"]) if "guider" in links
                               else (None, None))
        return {"steps": steps, "denoise": denoise, "guidance_scale": guidance,
                "sampler": sampler, "scheduler": scheduler, "model": model}

    @_remembered
    def _sampler_name(self, node_id: str) -> str | None:
        class_type = self._class(node_id)
        if class_type == "KSamplerSelect":
            return self._name(node_id, "sampler_name")
        if class_type == "SamplerSASolver":
            return "sa_solver_pece" if self._value(node_id, "use_pece") else "sa_solver"
        if class_type in SAMPLER_NODES:
            return SAMPLER_NODES[class_type]
        following = self._follow(node_id)
        return self._sampler_name(following) if following and class_type not in KNOWN else None

    @_remembered
    def _guider(self, node_id: str) -> tuple[float | None, str | None]:
        """(guidance scale, model name) of a guider; BasicGuider runs no unconditional pass."""
        class_type, links = self._class(node_id), self._links(node_id)
        model = self._model(links["model"]) if "model" in links else None
        if class_type == "BasicGuider":
            return 1.0, model
        if class_type == "DualCFGGuider":
            return self._number(node_id, "cfg_conds"), model
        return self._number(node_id, "cfg"), model

    @_remembered
    def _sigmas(self, node_id: str, output: int = 0) -> tuple[int | None, str | None, float]:
        """(denoiser evaluations, scheduler name, denoise) of output `output` of a sigmas
        node."""
        class_type = self._class(node_id)
        if class_type in SCHEDULERS:
            return self._scheduled(node_id)
        if class_type == "ManualSigmas":
            return max(self._manual_sigmas(node_id) - 1, 0), "manual", 1.0
        carrier = self._carrier(node_id, "sigmas")
        if carrier is None:
            return None, None, 1.0
        source, source_output = self._inputs(node_id)[carrier]
        with self._visit(node_id):
            steps, scheduler, denoise = self._sigmas(str(source), source_output)
        if steps is None:
            return steps, scheduler, denoise
        return self._split(node_id, class_type, steps, output), scheduler, denoise

    def _manual_sigmas(self, node_id: str) -> int:
        """How many numbers a ManualSigmas text lists (its length bounded first)."""
        text = str(self._value(node_id, "sigmas"))
        if len(text) > MAX_SIGMAS_TEXT:
            raise ValueError(f"{_node_named(node_id, 'ManualSigmas')} input 'sigmas': "
                             f"{len(text):,} characters, more than the limit of "
                             f"{MAX_SIGMAS_TEXT:,}")
        return sum(1 for match in _SIGMA_NUMBER.finditer(text)
                   if any(char.isdigit() for char in match.group()))

    def _scheduled(self, node_id: str) -> tuple[int | None, str | None, float]:
        class_type = self._class(node_id)
        scheduler = SCHEDULERS[class_type] or self._name(node_id, "scheduler")
        steps = self._number(node_id, "steps")
        denoise = self._number(node_id, "denoise", 1.0)
        if steps is None:
            return None, scheduler, denoise
        steps = int(steps)
        if denoise <= 0:
            return 0, scheduler, denoise
        if class_type == "SDTurboScheduler":
            steps = min(steps, int(10 * denoise))
        elif class_type in ROUNDED_DENOISE and denoise < 1:
            steps = round(steps * denoise)
        return steps, scheduler, denoise

    def _split(self, node_id: str, class_type: str, steps: int, output: int) -> int:
        """Evaluations left in output `output` of SplitSigmas / SplitSigmasDenoise (0: the high
        sigmas, 1: the low ones); other sigma nodes keep them all."""
        if class_type == "SplitSigmas":
            at = int(self._number(node_id, "step", 0))
            return min(at, steps) if output == 0 else max(steps - at, 0)
        if class_type == "SplitSigmasDenoise":
            low = round(steps * self._number(node_id, "denoise", 1.0))
            return (steps - low if low else 0) if output == 0 else low
        return steps

    # -- latents and images ---------------------------------------------------------------------
    def _latent(self, node_id: str) -> Size:
        if self._is_sampler(node_id):  # a pass guards itself
            made = self._pass(node_id)
            return Size(made.width, made.height, made.frame_count, made.batch_size, "latent",
                        made.geometry)
        if node_id not in self._latents:
            with self._visit(node_id):
                self._latents[node_id] = self._latent_of(node_id)
        return self._latents[node_id]

    def _latent_of(self, node_id: str) -> Size:
        class_type = self._class(node_id)
        if class_type in IMAGE_LATENTS or class_type in VIDEO_LATENTS:
            video = class_type in VIDEO_LATENTS
            frames = self._number(node_id, "length", 1) if video else 1
            return Size(self._pixels(node_id, "width"), self._pixels(node_id, "height"),
                        int(frames), self._int(node_id, "batch_size", 1), "empty",
                        VIDEO_GEOMETRY.get(class_type, DEFAULT_VIDEO_GEOMETRY) if video else None)
        links = self._links(node_id)
        if class_type in ENCODERS:
            image = self._image(links["pixels"]) if "pixels" in links else Size()
            return Size(*_on_latent_grid(image.width, image.height), image.frame_count,
                        image.batch_size, "encode")
        if class_type in ("LatentUpscale", "LatentUpscaleBy", "LatentCrop"):
            return self._resized_latent(node_id, class_type, links)
        if class_type in ("RepeatLatentBatch", "LatentFromBatch", "LatentBatch"):
            return self._rebatched(node_id, class_type, links, self._latent)
        following = self._follow(node_id, PASS_THROUGH.get(class_type))
        if following is None:
            if class_type == "LoadLatent" or class_type not in KNOWN:
                self.result.unknown_sizes.append(node_id)
            return Size()
        return self._latent(following)

    def _resized_latent(self, node_id: str, class_type: str, links: dict) -> Size:
        size = self._latent(links["samples"]) if "samples" in links else Size()
        width, height = size.width, size.height
        if class_type == "LatentUpscaleBy":
            scale = self._number(node_id, "scale_by", 1.0)
            width, height = (None if side is None else
                             round(side // LATENT_FACTOR * scale) * LATENT_FACTOR
                             for side in (width, height))
        elif class_type == "LatentCrop":
            width, height = self._pixels(node_id, "width"), self._pixels(node_id, "height")
        else:
            width, height = _upscaled(width, height, self._int(node_id, "width", 0),
                                      self._int(node_id, "height", 0))
        return Size(width, height, size.frame_count, size.batch_size, "upscale", size.geometry)

    def _rebatched(self, node_id: str, class_type: str, links: dict, size_of) -> Size:
        first = links.get("samples") or links.get("samples1") or links.get("image1")
        size = size_of(first) if first else Size()
        batch = size.batch_size
        if class_type == "RepeatLatentBatch" and batch is not None:
            batch *= self._int(node_id, "amount", 1)
        elif class_type == "LatentFromBatch":
            batch = self._int(node_id, "length", 1)
        elif class_type in ("LatentBatch", "ImageBatch"):
            second = links.get("samples2") or links.get("image2")
            other = size_of(second).batch_size if second else None
            batch = None if batch is None or other is None else batch + other
        return Size(size.width, size.height, size.frame_count, batch, size.source, size.geometry)

    @_remembered
    def _image(self, node_id: str) -> Size:
        """Pixel size of an IMAGE output (None where only the file would tell)."""
        with self._visit(node_id):
            return self._image_of(node_id)

    def _image_of(self, node_id: str) -> Size:
        class_type, links = self._class(node_id), self._links(node_id)
        if class_type.startswith("VAEDecode") and "samples" in links:
            return self._latent(links["samples"])
        if class_type == "EmptyImage":
            return Size(self._int(node_id, "width"), self._int(node_id, "height"), 1,
                        self._int(node_id, "batch_size", 1), "image")
        if class_type in ("ImageScale", "ImageScaleBy", "ImageScaleToTotalPixels"):
            return self._scaled_image(node_id, class_type, links)
        if class_type == "ImageBatch":
            return self._rebatched(node_id, class_type, links, self._image)
        if class_type in IMAGE_LOADERS and self._name(node_id, "image") in self.input_sizes:
            width, height = self.input_sizes[self._name(node_id, "image")]
            return Size(width, height, 1, 1, "input")
        following = None if class_type in IMAGE_LOADERS else self._follow(
            node_id, PASS_THROUGH.get(class_type))
        if following is None:
            self.result.unknown_sizes.append(node_id)
            return Size(source="image")
        return self._image(following)

    def _scaled_image(self, node_id: str, class_type: str, links: dict) -> Size:
        size = self._image(links["image"]) if "image" in links else Size()
        width, height = size.width, size.height
        if class_type == "ImageScaleBy":
            scale = self._number(node_id, "scale_by", 1.0)
            width = None if width is None else round(width * scale)
            height = None if height is None else round(height * scale)
        elif class_type == "ImageScaleToTotalPixels":
            pixels = self._number(node_id, "megapixels", 1.0) * 1024 * 1024
            if width and height:
                scale = (pixels / (width * height)) ** 0.5
                width, height = round(width * scale), round(height * scale)
        else:
            width, height = _scaled(width, height, self._int(node_id, "width", 0),
                                    self._int(node_id, "height", 0))
        return Size(width, height, size.frame_count, size.batch_size, size.source)

    def _pixels(self, node_id: str, name: str) -> int | None:
        value = self._int(node_id, name)
        return None if value is None else value // LATENT_FACTOR * LATENT_FACTOR

    def _int(self, node_id: str, name: str, default: int | None = None) -> int | None:
        value = self._number(node_id, name)
        return default if value is None else int(value)

    # -- models -----------------------------------------------------------------------------
    @_remembered
    def _model(self, node_id: str) -> str | None:
        """The checkpoint or UNet behind a MODEL output; LoRAs on the way are listed."""
        class_type = self._class(node_id)
        if class_type in CHECKPOINT_LOADERS:
            return self._name(node_id, CHECKPOINT_LOADERS[class_type])
        if class_type in LORA_LOADERS:
            lora = self._name(node_id, "lora_name")
            if lora and lora not in self.result.loras:
                self.result.loras.append(lora)
        links = self._links(node_id)
        following = links.get("model") or (self._follow(node_id) if class_type not in KNOWN
                                           else None)
        if following is None:
            return self._model_file(node_id)
        with self._visit(node_id):
            return self._model(following)

    def _model_file(self, node_id: str) -> str | None:
        """A custom loader's model: the first input that names a model file."""
        for value in self._inputs(node_id).values():
            if isinstance(value, str) and MODEL_FILE.search(value):
                return value
        return None

    def _any_model(self, needed: list[str]) -> str | None:
        for node_id in needed:
            if self._class(node_id) in CHECKPOINT_LOADERS:
                return self._name(node_id, CHECKPOINT_LOADERS[self._class(node_id)])
        return None


def conditioning_batches(graph: dict, sampler: str, guided: bool) -> int:
    """UNet batches per step of a sampler: one per positive conditioning, plus the negatives
    when cfg > 1 (a ConditioningCombine counts both of its sides, recursively)."""
    inputs = (graph.get(sampler) or {}).get("inputs") or {}
    sides = ("positive", "negative") if guided else ("positive",)
    return sum(_conditionings(graph, inputs.get(side)) for side in sides) or 1


def _conditionings(graph: dict, link: Any) -> int:
    """Conditionings joined behind `link`, without recursion (a chain may be long)."""
    count, stack, seen = 0, [link], set()
    while stack:
        link = stack.pop()
        source = str(link[0]) if isinstance(link, list) and link else None
        node = graph.get(source) if source is not None and source not in seen else None
        if not isinstance(node, dict) or node.get("class_type") not in COMBINERS:
            count += 1
            continue
        seen.add(source)
        inputs = node.get("inputs") or {}
        stack.extend(inputs.get(name) for name in ("conditioning_1", "conditioning_2"))
    return count


def _upscaled(width: int | None, height: int | None, to_width: int, to_height: int
              ) -> tuple[int | None, int | None]:
    """LatentUpscale's size: 0 keeps the aspect ratio; each side at least 64 px, on the grid."""
    if to_width == 0 and to_height == 0:
        return width, height
    if to_width == 0:
        to_height = max(64, to_height)
        to_width = None if not (width and height) else max(64, round(width * to_height / height))
    elif to_height == 0:
        to_width = max(64, to_width)
        to_height = None if not (width and height) else max(64, round(height * to_width / width))
    else:
        to_width, to_height = max(64, to_width), max(64, to_height)
    return _on_latent_grid(to_width, to_height)


def _scaled(width: int | None, height: int | None, to_width: int, to_height: int
            ) -> tuple[int | None, int | None]:
    """ImageScale's size: 0 keeps the aspect ratio."""
    if to_width == 0 and to_height == 0:
        return width, height
    if to_width == 0:
        return (None if not (width and height) else max(1, round(width * to_height / height)),
                to_height)
    if to_height == 0:
        return to_width, (None if not (width and height)
                          else max(1, round(height * to_width / width)))
    return to_width, to_height


def _on_latent_grid(width: int | None, height: int | None) -> tuple[int | None, int | None]:
    return tuple(None if side is None else side // LATENT_FACTOR * LATENT_FACTOR
                 for side in (width, height))


def _node_order(node_id: str) -> tuple:
    """Numeric ids in number order ("3" before "10"), then any others ("²" among them: only
    ASCII digits make a number). Compared as text, so no id is too long to order."""
    if not (node_id.isascii() and node_id.isdigit()):
        return (1, 0, node_id)
    digits = node_id.lstrip("0")
    return (0, len(digits), digits)
