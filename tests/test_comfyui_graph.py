"""ComfyUI prompt → perflib job: every recorded prompt, and hires-fix, img2img, refiner and
custom-sampler graphs built from ComfyUI's own node signatures."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perflib.comfyui.graph import KNOWN, parse_prompt
from tests.comfyui_server import RECORDINGS

CKPT = "tiny_sd15_random.safetensors"


@pytest.fixture
def recordings() -> Path:
    return RECORDINGS


def base_graph(width=512, height=512, batch=1, steps=20, cfg=7.0, sampler="euler",
               denoise=1.0) -> dict:
    """The standard text-to-image graph, node ids as ComfyUI's default workflow has them."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "KSampler",
              "inputs": {"seed": 1, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                         "scheduler": "normal", "denoise": denoise, "model": ["4", 0],
                         "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }


def hires_fix_graph(scale_node: dict) -> dict:
    """Base pass at 512², a latent upscale, then a second KSampler at denoise 0.5."""
    graph = base_graph()
    graph["10"] = scale_node
    graph["11"] = {"class_type": "KSampler",
                   "inputs": {"seed": 2, "steps": 12, "cfg": 7.0, "sampler_name": "dpmpp_2m",
                              "scheduler": "karras", "denoise": 0.5, "model": ["4", 0],
                              "positive": ["6", 0], "negative": ["7", 0],
                              "latent_image": ["10", 0]}}
    graph["8"]["inputs"]["samples"] = ["11", 0]
    return graph


def img2img_graph(with_scale: bool) -> dict:
    graph = base_graph(steps=25, denoise=0.6)
    del graph["5"]
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    pixels = ["10", 0]
    if with_scale:
        graph["11"] = {"class_type": "ImageScale",
                       "inputs": {"image": ["10", 0], "upscale_method": "bilinear",
                                  "width": 640, "height": 384, "crop": "disabled"}}
        pixels = ["11", 0]
    graph["12"] = {"class_type": "VAEEncode", "inputs": {"pixels": pixels, "vae": ["4", 2]}}
    graph["3"]["inputs"]["latent_image"] = ["12", 0]
    return graph


def custom_advanced_graph(sampler="dpmpp_sde", steps=20, split_at: int | None = None) -> dict:
    """SamplerCustomAdvanced with RandomNoise, CFGGuider, KSamplerSelect and BasicScheduler;
    with `split_at`, SplitSigmas feeds a high-noise pass and then a low-noise pass."""
    graph = base_graph(width=768, height=512)
    del graph["3"]
    graph.update({
        "20": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "21": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                     "negative": ["7", 0], "cfg": 4.5}},
        "22": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "23": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0],
                                                          "scheduler": "simple",
                                                          "steps": steps, "denoise": 1.0}},
        "24": {"class_type": "SamplerCustomAdvanced",
               "inputs": {"noise": ["20", 0], "guider": ["21", 0], "sampler": ["22", 0],
                          "sigmas": ["23", 0], "latent_image": ["5", 0]}},
    })
    graph["8"]["inputs"]["samples"] = ["24", 0]
    if split_at is not None:
        graph["25"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["23", 0],
                                                               "step": split_at}}
        graph["24"]["inputs"]["sigmas"] = ["25", 0]
        graph["26"] = {"class_type": "SamplerCustomAdvanced",
                       "inputs": {"noise": ["20", 0], "guider": ["21", 0],
                                  "sampler": ["22", 0], "sigmas": ["25", 1],
                                  "latent_image": ["24", 0]}}
        graph["8"]["inputs"]["samples"] = ["26", 0]
    return graph


# -- the recordings -------------------------------------------------------------------------
def accepted_prompts(folder: Path):
    for line in (folder / "prompts.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["action"] == "POST /prompt" and entry["http_status"] == 200:
            yield entry


@pytest.mark.parametrize("folder", ["sd15", "wan21"])
def test_every_recorded_prompt_parses_to_what_the_driver_drew(recordings, folder):
    entries = list(accepted_prompts(recordings / folder))
    assert len(entries) >= 30
    for entry in entries:
        drawn, graph = entry["params"], entry["request"]["prompt"]
        if entry["kind"] == "exec_error:alloc_error":
            # The driver swapped in a latent too big to allocate: the graph says so.
            drawn = {**drawn, **graph["5"]["inputs"]}
        job = parse_prompt(graph).job_params()
        expected = {"width": drawn["width"], "height": drawn["height"],
                    "batch_size": drawn["batch_size"], "frame_count": drawn.get("length", 1),
                    "steps": drawn["steps"], "guidance_scale": drawn["cfg"],
                    "sampler": drawn["sampler_name"]}
        assert {name: job[name] for name in expected} == expected, entry["kind"]
        (only,) = job["passes"]
        assert only["scheduler"] == drawn["scheduler"] and only["source"] == "empty"
        assert only["model_calls_per_step"] == (2 if drawn["sampler_name"] in
                                                ("heun", "dpmpp_sde") else 1)
        assert job["job_type"] == "comfyui"
        assert job["model_name"] == ("tiny_sd15_random.safetensors" if folder == "sd15"
                                     else "tiny_wan21_t2v_random.safetensors")
        assert job["pipeline_type"] == ("video" if drawn.get("length", 1) > 1 else "image")


def test_rejected_prompts_parse_or_fail_naming_node_and_input(recordings):
    for line in (recordings / "sd15" / "prompts.jsonl").read_text().splitlines():
        entry = json.loads(line)
        graph = entry.get("request", {}) and entry["request"].get("prompt")
        if entry.get("http_status") != 400 or graph is None:
            continue
        if entry["kind"] == "invalid:bad_link_node":
            with pytest.raises(ValueError, match=r"node 8 input 'samples'.*'99'"):
                parse_prompt(graph)
            continue
        parsed = parse_prompt(graph)
        if entry["kind"] == "invalid:unknown_class":
            assert parsed.unknown_nodes == ["SuperResolutionNodeThatDoesNotExist"]


def test_test_graphs_use_comfyui_node_signatures(recordings):
    """Every node of the graphs built here that the recording's object_info describes takes
    exactly the inputs ComfyUI declares for it."""
    info = json.loads((recordings / "sd15" / "object_info-subset.json").read_text())
    graphs = [base_graph(), hires_fix_graph({"class_type": "LatentUpscaleBy", "inputs": {
        "samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 1.5}}),
        img2img_graph(True), custom_advanced_graph(split_at=12)]
    checked = 0
    for graph in graphs:
        for node in graph.values():
            signature = info.get(node["class_type"])
            if signature is None:
                continue
            declared = {name for part in ("required", "optional")
                        for name in signature["input"].get(part, {})}
            assert set(node["inputs"]) == declared, node["class_type"]
            checked += 1
    assert checked >= 20


# -- multi-pass graphs ----------------------------------------------------------------------
@pytest.mark.parametrize("scale_node, second_size", [
    ({"class_type": "LatentUpscaleBy",
      "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 1.5}},
     (768, 768)),
    ({"class_type": "LatentUpscale",
      "inputs": {"samples": ["3", 0], "upscale_method": "bislerp", "width": 1024, "height": 0,
                 "crop": "disabled"}},
     (1024, 1024)),
    ({"class_type": "LatentUpscale",
      "inputs": {"samples": ["3", 0], "upscale_method": "bislerp", "width": 900, "height": 700,
                 "crop": "disabled"}},
     (896, 696)),
])
def test_hires_fix_is_a_second_pass_at_the_upscaled_size(scale_node, second_size):
    parsed = parse_prompt(hires_fix_graph(scale_node))
    base, second = parsed.passes
    assert (base.width, base.height, base.steps, base.source) == (512, 512, 20, "empty")
    assert (second.width, second.height) == second_size
    # denoise 0.5 still runs all 12 steps, on the tail of a 24-step schedule
    assert (second.steps, second.denoise, second.source) == (12, 0.5, "upscale")
    assert second.scheduler == "karras" and second.sampler == "dpmpp_2m"
    job = parsed.job_params()
    assert (job["width"], job["steps"]) == (512, 20)
    assert [p["source"] for p in job["passes"]] == ["empty", "upscale"]
    assert job["extra_params"]["comfyui"]["sampler_nodes"] == ["3", "11"]


def test_pass_order_follows_the_links_not_the_node_ids():
    graph = hires_fix_graph({"class_type": "LatentUpscaleBy", "inputs": {
        "samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}})
    renamed = json.loads(json.dumps(graph).replace('"3"', '"99"'))
    parsed = parse_prompt(renamed)
    assert [p.node_id for p in parsed.passes] == ["99", "11"]
    assert [p.width for p in parsed.passes] == [512, 1024]


def test_img2img_takes_its_size_from_the_image_when_the_graph_states_it():
    parsed = parse_prompt(img2img_graph(with_scale=True))
    (only,) = parsed.passes
    assert (only.width, only.height, only.source) == (640, 384, "encode")
    assert (only.steps, only.denoise) == (25, 0.6)  # KSampler runs `steps` even at denoise<1
    assert parsed.unknown_sizes == ["10"]  # the LoadImage itself; its scale fixes the size


def test_img2img_from_a_file_records_an_unknown_size_and_says_so():
    parsed = parse_prompt(img2img_graph(with_scale=False))
    (only,) = parsed.passes
    assert (only.width, only.height, only.batch_size) == (None, None, None)
    assert only.source == "encode"
    job = parsed.job_params()
    assert job["width"] is None and job["steps"] == 25
    assert job["extra_params"]["comfyui"]["unknown_sizes"] == ["10"]


def test_sampler_custom_advanced_counts_sigmas_and_reads_guider_and_sampler():
    parsed = parse_prompt(custom_advanced_graph())
    (only,) = parsed.passes
    assert (only.width, only.height, only.steps) == (768, 512, 20)
    assert (only.guidance_scale, only.sampler, only.scheduler) == (4.5, "dpmpp_sde", "simple")
    assert only.model_calls_per_step == 2 and only.model_name == CKPT


def test_split_sigmas_gives_a_high_noise_pass_then_a_low_noise_pass():
    parsed = parse_prompt(custom_advanced_graph(sampler="euler", steps=20, split_at=12))
    high, low = parsed.passes
    assert (high.node_id, high.steps, high.source) == ("24", 12, "empty")
    assert (low.node_id, low.steps, low.source) == ("26", 8, "latent")
    assert (low.width, low.height) == (768, 512)


def test_basic_scheduler_denoise_and_basic_guider():
    graph = custom_advanced_graph(sampler="euler")
    graph["23"]["inputs"]["denoise"] = 0.4  # still `steps` sigmas, from a longer schedule
    graph["21"] = {"class_type": "BasicGuider", "inputs": {"model": ["4", 0],
                                                           "conditioning": ["6", 0]}}
    (only,) = parse_prompt(graph).passes
    assert (only.steps, only.denoise, only.guidance_scale) == (20, 0.4, 1.0)


def test_ksampler_advanced_refiner_runs_the_steps_between_start_and_end():
    graph = base_graph()
    graph["30"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "refiner"}}
    common = {"add_noise": "enable", "noise_seed": 1, "cfg": 7.0, "sampler_name": "heun",
              "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0],
              "return_with_leftover_noise": "enable", "steps": 25}
    graph["3"] = {"class_type": "KSamplerAdvanced",
                  "inputs": {**common, "model": ["4", 0], "latent_image": ["5", 0],
                             "start_at_step": 0, "end_at_step": 20}}
    graph["31"] = {"class_type": "KSamplerAdvanced",
                   "inputs": {**common, "model": ["30", 0], "latent_image": ["3", 0],
                              "start_at_step": 20, "end_at_step": 10000}}
    graph["8"]["inputs"]["samples"] = ["31", 0]
    base, refiner = parse_prompt(graph).passes
    assert (base.steps, base.model_name, base.model_calls_per_step) == (20, CKPT, 2)
    assert (refiner.steps, refiner.model_name, refiner.source) == (5, "refiner", "latent")
    assert refiner.denoise == pytest.approx(0.2)


def test_links_pass_through_reroutes_unknown_nodes_and_loras():
    graph = base_graph()
    graph["40"] = {"class_type": "Reroute", "inputs": {"": ["5", 0]}}
    graph["41"] = {"class_type": "SomeCustomLatentPassThrough", "inputs": {"latent": ["40", 0],
                                                                          "strength": 0.5}}
    graph["42"] = {"class_type": "LoraLoader",
                   "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "style.safetensors",
                              "strength_model": 0.8, "strength_clip": 0.8}}
    graph["43"] = {"class_type": "PrimitiveInt", "inputs": {"value": 33}}
    graph["3"]["inputs"].update(latent_image=["41", 0], model=["42", 0], steps=["43", 0])
    parsed = parse_prompt(graph)
    (only,) = parsed.passes
    assert (only.width, only.steps, only.model_name) == (512, 33, CKPT)
    assert parsed.loras == ["style.safetensors"]
    assert parsed.unknown_nodes == ["SomeCustomLatentPassThrough", "PrimitiveInt"]


def test_a_video_latent_makes_a_video_job_with_frames():
    graph = base_graph()
    graph["5"] = {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": 832, "height": 480, "length": 81, "batch_size": 1}}
    parsed = parse_prompt(graph)
    assert parsed.pipeline_type == "video"
    assert parsed.job_params()["frame_count"] == 81


def test_a_graph_without_a_sampler_is_still_a_job():
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
             "2": {"class_type": "ImageUpscaleWithModel", "inputs": {"image": ["1", 0],
                                                                     "upscale_model": ["3", 0]}},
             "3": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
             "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                         "filename_prefix": "up"}}}
    parsed = parse_prompt(graph)
    job = parsed.job_params()
    assert parsed.passes == [] and job["passes"] == []
    assert job["pipeline_type"] == "image" and job["steps"] is None
    assert set(parsed.unknown_nodes) == {"ImageUpscaleWithModel", "UpscaleModelLoader"}


def test_only_the_given_outputs_count():
    graph = hires_fix_graph({"class_type": "LatentUpscaleBy", "inputs": {
        "samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 1.5}})
    graph["50"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    graph["51"] = {"class_type": "PreviewImage", "inputs": {"images": ["50", 0]}}
    assert len(parse_prompt(graph, outputs=["51"]).passes) == 1
    assert len(parse_prompt(graph).passes) == 2


@pytest.mark.parametrize("prompt, message", [
    ([1, 2], r"prompt must be a JSON object"),
    ({"1": {"inputs": {}}}, r"node 1: must be an object with a class_type"),
    ({"1": {"class_type": "KSampler", "inputs": [1]}}, r"node 1 \(KSampler\): inputs"),
    ({"1": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0]}}},
     r"node 1 input 'samples': links to node '7'"),
    ({"1": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0, 3]}}},
     r"node 1 input 'samples': a link must be \[node id, output index\]"),
])
def test_malformed_prompts_name_the_node_and_input(prompt, message):
    with pytest.raises(ValueError, match=message):
        parse_prompt(prompt)


def test_a_cycle_is_refused_not_recursed_forever():
    graph = base_graph()
    graph["3"]["inputs"]["latent_image"] = ["60", 0]
    graph["60"] = {"class_type": "LatentUpscaleBy",
                   "inputs": {"samples": ["3", 0], "upscale_method": "area", "scale_by": 1.0}}
    with pytest.raises(ValueError, match="cycle"):
        parse_prompt(graph)


def test_parsing_never_changes_the_prompt():
    graph = custom_advanced_graph(split_at=10)
    before = copy.deepcopy(graph)
    parse_prompt(graph)
    assert graph == before


def test_graph_module_needs_nothing_but_the_standard_library():
    source = (Path(__file__).resolve().parents[1] / "perflib" / "comfyui" / "graph.py")
    imports = [line.split()[1] for line in source.read_text().splitlines()
               if line.startswith(("import ", "from "))]
    assert set(imports) <= {"__future__", "functools", "graphlib", "math", "re", "contextlib",
                            "dataclasses", "typing"}


# -- any input ------------------------------------------------------------------------------
NODE_IDS = st.sampled_from(["1", "2", "3", "4", "5", "x"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
        ["euler", "heun", "karras", "model.safetensors", "1, 0.5, 0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=2),
    max_leaves=4)
INPUTS = st.dictionaries(
    st.sampled_from(["model", "samples", "latent_image", "sigmas", "sampler", "guider",
                     "pixels", "image", "steps", "cfg", "denoise", "width", "height", "length",
                     "batch_size", "scale_by", "step", "start_at_step", "end_at_step",
                     "sampler_name", "ckpt_name", "megapixels", "amount", "sigmas_text"]),
    VALUES | st.tuples(NODE_IDS, st.integers(0, 2)).map(list), max_size=6)
GRAPHS = st.dictionaries(NODE_IDS, st.fixed_dictionaries({
    "class_type": st.sampled_from(sorted(KNOWN) + ["Custom", "KSampler (Efficient)"]),
    "inputs": INPUTS}), max_size=6)


@given(GRAPHS)
@settings(max_examples=600, deadline=None, database=None)
def test_any_graph_parses_or_is_refused_with_a_value_error(graph):
    try:
        job = parse_prompt(graph).job_params()
    except ValueError:
        return
    json.dumps(job, allow_nan=False)  # what is returned is plain, finite JSON
    for one in job["passes"]:
        assert all(isinstance(one.get(name, 1), int) for name in
                   ("width", "height", "steps", "frame_count", "batch_size"))


@given(st.sampled_from(["base", "hires", "img2img", "custom"]), st.data())
@settings(max_examples=600, deadline=None, database=None)
def test_any_value_in_a_real_graph_parses_or_is_refused_with_a_value_error(which, data):
    graph = {"base": base_graph, "img2img": lambda: img2img_graph(True),
             "custom": lambda: custom_advanced_graph(split_at=5),
             "hires": lambda: hires_fix_graph({"class_type": "LatentUpscaleBy", "inputs": {
                 "samples": ["3", 0], "upscale_method": "area", "scale_by": 1.5}})}[which]()
    for _ in range(data.draw(st.integers(1, 3))):
        node = data.draw(st.sampled_from(sorted(graph)))
        name = data.draw(st.sampled_from(sorted(graph[node]["inputs"]) + ["extra"]))
        graph[node]["inputs"][name] = data.draw(VALUES)
    test_any_graph_parses_or_is_refused_with_a_value_error.hypothesis.inner_test(graph)
