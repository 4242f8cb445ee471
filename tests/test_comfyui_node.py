"""The perflib custom node for ComfyUI: installed into a ComfyUI-shaped folder and attached to a
stand-in ``PromptServer`` (ComfyUI is not in the test environment; ``make comfyui-e2e`` runs the
real one), talking to a real ``perflib serve`` on a temporary SQLite database.

Checked: installing (refusals, idempotence, settings file); a submitted prompt always comes back
unchanged and every server message still goes out; the estimate reaches the browser before the
prompt starts, with this server's queue ahead of it; the messages of a real ComfyUI server,
replayed from the recording, become stored job records with per-node phases; records made while
the service is down are spooled and sent once it is back.
"""
from __future__ import annotations

import copy
import http.server
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from perflib.cli import main
from perflib.comfyui.install import PACKAGE_NAME, install_node
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases as phases
from tools.loadtest import free_port, wait_until_serving
from tests.conftest import REAL_DATA
from tests.deadline import within
from tests.fake_nvml import FakeDevice, FakeNvml

SD15 = REAL_DATA / "comfyui" / "sd15"
WAIT_S = 30.0  # generous: the box is shared


# -- a ComfyUI-shaped folder and a stand-in PromptServer ---------------------------------------
@pytest.fixture
def comfyui_dir(tmp_path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "custom_nodes").mkdir()
    for name in ("main.py", "server.py", "execution.py", "nodes.py", "folder_paths.py"):
        (root / name).write_text("# stand-in\n")
    return root


class FakeRoutes:
    def __init__(self):
        self.handlers = {}

    def get(self, path):
        def register(handler):
            self.handlers[path] = handler
            return handler
        return register


class FakeWeb:
    @staticmethod
    def json_response(data, status=200):
        return {"status": status, "body": data}


class FakePromptQueue:
    """ComfyUI's PromptQueue as the node sees it: each change is announced (``status``) while
    the queue's lock is held, as ``put``, ``get`` and ``task_done`` do."""

    def __init__(self, server):
        self.server = server
        self.mutex = threading.RLock()
        self.pending, self.running, self.history = [], [], {}

    def put(self, item):
        with self.mutex:
            self.pending.append(item)
            self.server.queue_updated()

    def start(self, prompt_id):
        with self.mutex:
            item = next(i for i in self.pending if i[1] == prompt_id)
            self.pending.remove(item)
            self.running.append(copy.deepcopy(item))
            self.server.queue_updated()

    def task_done(self, prompt_id, status):
        with self.mutex:
            item = next(i for i in self.running if i[1] == prompt_id)
            self.running.remove(item)
            self.history[prompt_id] = {"prompt": list(item[:5]), "outputs": {},
                                       "status": status}
            self.server.queue_updated()

    def get_current_queue_volatile(self):
        with self.mutex:
            return list(self.running), list(self.pending)

    def get_history(self, prompt_id=None):
        with self.mutex:
            entry = self.history.get(prompt_id)
            return {prompt_id: copy.deepcopy(entry)} if entry else {}


class FakePromptServer:
    """The parts of ComfyUI's PromptServer the node uses, with ``POST /prompt``'s order of work:
    the on-prompt handlers, then the prompt id, then the queue."""

    def __init__(self):
        self.routes = FakeRoutes()
        self.handlers, self.sent = [], []
        self.prompt_queue = FakePromptQueue(self)
        self.address, self.port, self.number = "127.0.0.1", 8188, 0

    def add_on_prompt_handler(self, handler):
        self.handlers.append(handler)

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))

    def queue_updated(self):
        running, pending = self.prompt_queue.get_current_queue_volatile()
        self.send_sync("status", {"status": {"exec_info": {
            "queue_remaining": len(running) + len(pending)}}})

    def post_prompt(self, json_data, prompt_id=None, create_time=None, outputs=("9",)):
        for handler in self.handlers:  # as ComfyUI's trigger_on_prompt
            try:
                json_data = handler(json_data)
            except Exception:
                pass
        prompt_id = str(json_data.get("prompt_id", prompt_id or uuid.uuid4()))
        extra_data = {"client_id": json_data.get("client_id"),
                      "create_time": create_time or int(time.time() * 1000)}
        self.prompt_queue.put((self.number, prompt_id, json_data["prompt"], extra_data,
                               list(outputs), {}))
        self.number += 1
        return prompt_id

    def events(self, name):
        return [data for event, data, _ in self.sent if event == name]


def load_package(package_dir: Path, monkeypatch, server=None) -> types.ModuleType:
    """Import the installed package as ComfyUI does (by file, under a path-like name), with
    `server` standing in as ``server.PromptServer.instance`` (none: outside ComfyUI)."""
    if server is not None:
        stand_in = types.ModuleType("server")
        stand_in.PromptServer = types.SimpleNamespace(instance=server)
        stand_in.web = FakeWeb
        monkeypatch.setitem(sys.modules, "server", stand_in)
    else:
        monkeypatch.delitem(sys.modules, "server", raising=False)
    name = f"custom_nodes_perflib_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, package_dir / "__init__.py")
    package = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, package)
    spec.loader.exec_module(package)
    return package


def attach(package, server, service_url, tmp_path, clock=time.time, **settings):
    """A node integration on `server`, built from the installed package's own modules."""
    hooks = importlib.import_module(f"{package.__name__}.hooks")
    node_settings = importlib.import_module(f"{package.__name__}.settings")
    values = {"service_url": service_url, "spool_path": tmp_path / "spool" / "records.jsonl",
              "estimate_timeout_s": 5.0, **settings}
    return hooks.Integration(server, node_settings.Settings(**values), FakeWeb, clock).attach()


@pytest.fixture
def package(comfyui_dir, monkeypatch):
    return load_package(install_node(comfyui_dir).path, monkeypatch)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def wait_for(condition, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


# -- a real perflib service ---------------------------------------------------------------------
def start_service(folder: Path, port: int) -> tuple[subprocess.Popen, str]:
    database_url = f"sqlite:///{folder / 'perflib.db'}"
    Store(database_url).init_db()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFLIB_")}
    log_path = folder / f"service-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "perflib.serve", "--port", str(port),
             "--database-url", database_url], cwd=folder, env=env, stdout=log,
            stderr=subprocess.STDOUT)
    wait_until_serving(port, process, log_path, timeout=120)
    return process, database_url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("perflib-service")
    port = free_port()
    process, database_url = start_service(folder, port)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}", database_url=database_url)
    stop(process)


def stored_jobs(database_url: str, job_ids) -> dict[str, dict]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(jobs).where(jobs.c.job_id.in_(list(job_ids))))
            found = {row.job_id: dict(row._mapping) for row in rows}
            for row in conn.execute(sa.select(phases).where(phases.c.job_id.in_(list(found)))
                                    .order_by(phases.c.seq)):
                found[row.job_id].setdefault("phases", []).append(row.name)
        return found
    finally:
        engine.dispose()


# -- recorded prompts ---------------------------------------------------------------------------
def graph(width=64, steps=4, seed=1, text="a red fox"):
    return {
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "tiny_sd15_random.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": width, "height": width, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }


@pytest.fixture(scope="module")
def recording():
    """The first 20 prompts the recorded server ran: each one's request, history entry and
    websocket messages (successes, two fully cached, an execution error, an interrupt)."""
    requests = {}
    for line in (SD15 / "prompts.jsonl").read_text().splitlines():
        action = json.loads(line)
        if action.get("action") == "POST /prompt" and action.get("prompt_id"):
            requests[action["prompt_id"]] = action["request"]
    messages = defaultdict(list)
    for line in (SD15 / "ws-messages.jsonl").read_text().splitlines():
        received = json.loads(line)
        data = received["msg"].get("data")
        if isinstance(data, dict) and data.get("prompt_id"):
            messages[data["prompt_id"]].append((received["t"], received["msg"]["type"], data))
    history = json.loads((SD15 / "history.json").read_text())
    return [(requests[prompt_id], entry, messages[prompt_id])
            for prompt_id, entry in list(history.items())[:20]]


class ReplayClock:
    now = 0.0

    def __call__(self):
        return self.now


def replay(server: FakePromptServer, clock: ReplayClock, request, entry, messages) -> str:
    """Submit one recorded prompt and play back what the real server sent while it ran."""
    number, prompt_id, _, extra_data, outputs = entry["prompt"][:5]
    clock.now = messages[0][0] - 0.01
    server.post_prompt(copy.deepcopy(request), prompt_id=prompt_id,
                       create_time=extra_data["create_time"], outputs=outputs)
    server.prompt_queue.start(prompt_id)
    for received_at, event, data in messages:
        clock.now = received_at
        server.send_sync(event, data, request.get("client_id"))
    server.prompt_queue.task_done(prompt_id, entry["status"])
    return prompt_id


# -- installing ---------------------------------------------------------------------------------
def test_install_copies_the_package_and_the_parser_and_is_idempotent(comfyui_dir):
    first = install_node(comfyui_dir)
    assert first.path == comfyui_dir / "custom_nodes" / PACKAGE_NAME
    for name in ("__init__.py", "graph.py", "hooks.py", "web/perflib.js", "README.md"):
        assert (first.path / name).is_file(), name
    parser = Path(__file__).resolve().parents[1] / "perflib" / "comfyui" / "graph.py"
    assert (first.path / "graph.py").read_bytes() == parser.read_bytes()
    (first.path / "spool").mkdir()
    (first.path / "spool" / "records.jsonl").write_text('{"job_id": "kept"}\n')
    second = install_node(comfyui_dir, service_url="http://perflib.example:8328/")
    assert sorted(second.files) == sorted(first.files)
    assert json.loads(second.config.read_text()) == {
        "service_url": "http://perflib.example:8328"}
    assert (second.path / "spool" / "records.jsonl").read_text() == '{"job_id": "kept"}\n'
    install_node(comfyui_dir)  # no --service-url: the settings stay
    assert json.loads(second.config.read_text())["service_url"] == "http://perflib.example:8328"


def test_install_refuses_a_folder_that_is_not_comfyui(tmp_path, comfyui_dir):
    with pytest.raises(ValueError, match=r"not a ComfyUI checkout \(no main\.py, server\.py"):
        install_node(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match="not a ComfyUI checkout"):
        install_node(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="must start with http"):
        install_node(comfyui_dir, service_url="perflib:8328")
    assert not (comfyui_dir / "custom_nodes" / PACKAGE_NAME).exists()


def test_install_into_a_base_directory(tmp_path, comfyui_dir):
    base = tmp_path / "base"
    for folder in ("custom_nodes", "models"):
        (base / folder).mkdir(parents=True)
    installed = install_node(comfyui_dir, base_directory=base)
    assert installed.path == base / "custom_nodes" / PACKAGE_NAME
    assert not (comfyui_dir / "custom_nodes" / PACKAGE_NAME).exists()


@pytest.mark.parametrize("folders", [(), ("models",), ("custom_nodes",)])
def test_install_refuses_a_base_directory_without_comfyuis_folders(folders, tmp_path,
                                                                    comfyui_dir):
    base = tmp_path / "anywhere"
    base.mkdir()
    for folder in folders:
        (base / folder).mkdir()
    with pytest.raises(ValueError, match=r"anywhere is not a ComfyUI base directory \(it needs "
                                         r"a custom_nodes folder and one of models, input"):
        install_node(comfyui_dir, base_directory=base)
    assert sorted(path.name for path in base.iterdir()) == sorted(folders)


@pytest.mark.parametrize("link", ["", "hooks.py", "web", "web/perflib.js", "graph.py",
                                  "perflib_estimate.json"])
def test_install_never_writes_through_a_symbolic_link(link, tmp_path, comfyui_dir):
    """A link in the package folder (or the folder itself) is refused, and what it points to
    is left as it was."""
    install_node(comfyui_dir)
    package_dir = comfyui_dir / "custom_nodes" / PACKAGE_NAME
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "perflib.js").write_text("keep me")
    pointed = elsewhere if link in ("", "web") else elsewhere / "perflib.js"
    linked = package_dir / link
    shutil.rmtree(linked) if linked.is_dir() else linked.unlink(missing_ok=True)
    linked.symlink_to(pointed)
    with pytest.raises(ValueError, match=f"{linked} is a symbolic link"):
        install_node(comfyui_dir, service_url="http://h:8328")
    assert [(p.name, p.read_text()) for p in elsewhere.iterdir()] == [("perflib.js", "keep me")]


def test_the_install_command(comfyui_dir, tmp_path, capsys):
    assert main(["comfyui", "install", str(comfyui_dir), "--service-url", "http://h:8328"]) == 0
    out = capsys.readouterr().out
    assert str(comfyui_dir / "custom_nodes" / PACKAGE_NAME) in out and "restart ComfyUI" in out
    assert main(["comfyui", "install", str(tmp_path / "nothing")]) == 2
    assert "is not a ComfyUI checkout" in capsys.readouterr().err
    assert main(["comfyui", "install", str(comfyui_dir), "--base-directory", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"perflib comfyui install: {tmp_path} is not a ComfyUI "
                                       "base directory (it needs a custom_nodes folder and one "
                                       "of models, input, output, user); give the folder "
                                       "ComfyUI's --base-directory names\n")


def test_imported_by_comfyui_it_attaches_with_its_settings_file(comfyui_dir, monkeypatch):
    monkeypatch.delenv("PERFLIB_SERVICE_URL", raising=False)
    installed = install_node(comfyui_dir, service_url="http://127.0.0.1:9")
    server = FakePromptServer()
    package = load_package(installed.path, monkeypatch, server)
    assert package.NODE_CLASS_MAPPINGS == {} and package.WEB_DIRECTORY == "./web"
    assert package.integration.settings.service_url == "http://127.0.0.1:9"
    assert server.handlers == [package.integration.on_prompt]
    assert "/perflib/estimate/{prompt_id}" in server.routes.handlers
    monkeypatch.setenv("PERFLIB_SERVICE_URL", "http://127.0.0.1:10/")
    again = load_package(installed.path, monkeypatch, FakePromptServer())
    assert again.integration.settings.service_url == "http://127.0.0.1:10"


def test_outside_comfyui_it_attaches_to_nothing(package):
    assert package.integration is None


# -- never in ComfyUI's way ---------------------------------------------------------------------
class FailingService(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"boom")

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_service_url():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingService)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("where", ["down", "failing"])
def test_a_prompt_comes_back_unchanged_and_runs_when_the_service_fails(
        where, package, tmp_path, failing_service_url):
    url = closed_port_url() if where == "down" else failing_service_url
    server = FakePromptServer()
    node = attach(package, server, url, tmp_path)
    body = {"prompt": graph(), "client_id": "browser-1", "extra_data": {"extra_pnginfo": {}}}
    before = copy.deepcopy(body)
    assert node.on_prompt(body) is body and body == before
    for odd in (None, [], {"prompt": "not a graph"}, {"no": "prompt"}):
        assert node.on_prompt(odd) is odd
    prompt_id = server.post_prompt(body)
    server.prompt_queue.start(prompt_id)
    started = time.monotonic()
    node.send_sync("execution_start", {"prompt_id": prompt_id, "timestamp": 1}, "browser-1")
    assert time.monotonic() - started < 6  # at most the estimate's own timeout
    assert server.events("execution_start") == [{"prompt_id": prompt_id, "timestamp": 1}]
    assert server.events("perflib.estimate") == []
    assert node.board.view(prompt_id) is None


def test_every_message_still_goes_out_when_watching_it_fails(package, tmp_path, monkeypatch):
    server = FakePromptServer()
    node = attach(package, server, closed_port_url(), tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("perflib bug")
    monkeypatch.setattr(node.board, "queue_changed", broken)
    monkeypatch.setattr(node.board, "submitted", broken)
    body = {"prompt": graph()}
    assert node.on_prompt(body) is body
    node.send_sync("status", {"status": {}}, None)
    node.send_sync(1, b"\x00binary preview", "sid")
    assert server.sent == [("status", {"status": {}}, None), (1, b"\x00binary preview", "sid")]


# -- the estimate -------------------------------------------------------------------------------
def test_the_estimate_reaches_the_browser_before_the_prompt_starts(package, service, tmp_path):
    server = FakePromptServer()
    node = attach(package, server, service.url, tmp_path)
    prompt_id = server.post_prompt({"prompt": graph(), "client_id": "browser-1"})
    server.prompt_queue.start(prompt_id)
    server.send_sync("execution_start", {"prompt_id": prompt_id, "timestamp": 1}, "browser-1")
    events = [(event, data) for event, data, _ in server.sent if event != "status"]
    assert [event for event, _ in events] == ["perflib.estimate", "execution_start"]
    estimate = events[0][1]
    assert [sid for event, _, sid in server.sent if event == "perflib.estimate"] == ["browser-1"]
    assert estimate["prompt_id"] == prompt_id and estimate["predicted_time_seconds"] > 0
    low, high = estimate["uncertainty_range"]
    assert low <= estimate["predicted_time_seconds"] <= high
    assert estimate["parsed_job"]["passes"][0]["steps"] == 4
    assert estimate["queue"]["state"] == "running"
    assert node.board.view(prompt_id)["prompt_id"] == prompt_id


def test_the_queue_eta_counts_the_prompts_ahead_on_this_server(package, service, tmp_path):
    server = FakePromptServer()
    node = attach(package, server, service.url, tmp_path)
    ids = [server.post_prompt({"prompt": graph(steps=steps), "client_id": "b"})
           for steps in (2, 8, 4)]
    sent = wait_for(lambda: len(server.events("perflib.estimate")) == 3
                    and server.events("perflib.estimate"))
    by_id = {estimate["prompt_id"]: estimate for estimate in sent}
    predicted = [by_id[i]["predicted_time_seconds"] for i in ids]
    assert [by_id[i]["queue"]["jobs_ahead"] for i in ids] == [0, 1, 2]
    assert by_id[ids[2]]["queue"]["expected_start_seconds"] == pytest.approx(
        predicted[0] + predicted[1], abs=0.01)
    assert by_id[ids[2]]["queue"]["expected_finish_seconds"] == pytest.approx(
        sum(predicted), abs=0.01)
    server.prompt_queue.start(ids[0])  # the first one runs: the third waits for less
    answer = wait_for(lambda: node.board.view(ids[2]))
    route = server.routes.handlers["/perflib/estimate/{prompt_id}"]
    request = types.SimpleNamespace(match_info={"prompt_id": ids[2]})
    response = _run(route(request))
    assert response["status"] == 200 and response["body"]["queue"]["jobs_ahead"] == 2
    assert answer["queue"]["expected_start_seconds"] <= predicted[0] + predicted[1]
    missing = _run(route(types.SimpleNamespace(match_info={"prompt_id": "nope"})))
    assert missing["status"] == 404 and "nope" in missing["body"]["error"]


def test_the_prompt_queued_before_is_sent_so_an_identical_resubmit_costs_nothing(
        package, service, tmp_path):
    """The node sends the graph queued just before (ComfyUI runs it just before, leaving its
    outputs in the cache): a resubmit of the same graph is estimated under 1 s, every node
    cached; a new text reruns only what depends on it."""
    server = FakePromptServer()
    attach(package, server, service.url, tmp_path)
    ids = [server.post_prompt({"prompt": prompt, "client_id": "b"})
           for prompt in (graph(steps=8), graph(steps=8), graph(steps=8, text="a cat"))]
    sent = wait_for(lambda: len(server.events("perflib.estimate")) == 3
                    and server.events("perflib.estimate"))
    first, again, new_text = ({e["prompt_id"]: e for e in sent}[i] for i in ids)
    assert not any(n["cached"] for n in first["nodes"])
    assert again["predicted_time_seconds"] < 1.0 and all(n["cached"] for n in again["nodes"])
    assert {n["id"] for n in new_text["nodes"] if not n["cached"]} == {"6", "3", "8", "9"}
    assert new_text["predicted_time_seconds"] <= first["predicted_time_seconds"]


def _run(coroutine):
    import asyncio
    return asyncio.run(coroutine)


# -- job records --------------------------------------------------------------------------------
def test_replayed_server_messages_become_stored_jobs_with_node_phases(
        package, service, tmp_path, recording):
    server, clock = FakePromptServer(), ReplayClock()
    attach(package, server, service.url, tmp_path, clock=clock)
    ids = [replay(server, clock, *prompt) for prompt in recording]
    job_ids = {f"comfyui-{prompt_id}": prompt_id for prompt_id in ids}
    stored = wait_for(lambda: len(found := stored_jobs(service.database_url, job_ids)) == 20
                      and found)
    outcomes = {"success": 0, "failed": 0, "cancelled": 0, "comfyui-cache-hit": 0}
    for job_id, job in stored.items():
        outcomes[job["status"]] += 1
        outcomes["comfyui-cache-hit"] += job["job_type"] == "comfyui-cache-hit"
        entry = next(e for r, e, m in recording if e["prompt"][1] == job_ids[job_id])
        graph_nodes = entry["prompt"][2]
        for name in job.get("phases", []):
            node_id, class_type = name.split(":")
            assert graph_nodes[node_id]["class_type"] == class_type
        if job["job_type"] == "comfyui-cache-hit":
            assert "phases" not in job
        elif job["status"] == "success":
            assert {"3:KSampler", "8:VAEDecode", "9:SaveImage"} <= set(job["phases"])
            assert job["extra_params"]["comfyui"]["sampler_its"]["3"] > 0
    assert outcomes == {"success": 18, "failed": 1, "cancelled": 1, "comfyui-cache-hit": 2}
    first = stored[f"comfyui-{ids[0]}"]
    assert first["phases"] == ["4:CheckpointLoaderSimple", "5:EmptyLatentImage",
                               "7:CLIPTextEncode", "6:CLIPTextEncode", "3:KSampler",
                               "8:VAEDecode", "9:SaveImage"]
    assert (first["width"], first["height"], first["steps"]) == (64, 64, 8)
    # times from the server's own timestamps: created +1 ms started, +3.599 s finished
    assert (first["queue_seconds"], first["processing_seconds"], first["total_seconds"]) == \
        pytest.approx((0.001, 3.599, 3.600), abs=0.0005)
    failed = next(job for job in stored.values() if job["status"] == "failed")
    assert failed["error_type"] == "RuntimeError"
    assert failed["extra_params"]["comfyui"]["error_node"] == {"id": "5",
                                                              "type": "EmptyLatentImage"}
    # its 16384×16384 latent is beyond what a job record takes: kept aside, the job stored
    assert failed["width"] is None
    assert failed["extra_params"]["invalid_fields"]["width"]["value"] == 16384


def test_a_prompt_without_a_client_is_recorded_from_its_history(
        package, service, tmp_path, recording):
    """Without a client_id ComfyUI sends no execution_start/success: progress_state gives the
    phases and the history entry the outcome."""
    server, clock = FakePromptServer(), ReplayClock()
    attach(package, server, service.url, tmp_path, clock=clock)
    request, entry, messages = copy.deepcopy(recording[0])
    prompt_id = entry["prompt"][1] = f"no-client-{uuid.uuid4().hex}"
    request.pop("client_id")
    kept = [(t, event, {**data, "prompt_id": prompt_id}) for t, event, data in messages
            if event in ("progress_state", "progress")]
    replay(server, clock, request, entry, kept)
    job = wait_for(lambda: stored_jobs(service.database_url, [f"comfyui-{prompt_id}"]))
    job = job[f"comfyui-{prompt_id}"]
    assert job["status"] == "success" and len(job["phases"]) == 7
    assert job["processing_seconds"] == pytest.approx(3.599, abs=0.0005)


def test_a_parser_failure_never_loses_the_record(
        package, service, tmp_path, recording, monkeypatch):
    recorder = importlib.import_module(f"{package.__name__}.recorder")

    def broken(*args, **kwargs):
        raise KeyError("a parser bug")
    monkeypatch.setattr(recorder, "parse_prompt", broken)
    server, clock = FakePromptServer(), ReplayClock()
    attach(package, server, service.url, tmp_path, clock=clock)
    request, entry, messages = copy.deepcopy(recording[0])
    prompt_id = entry["prompt"][1] = f"parser-bug-{uuid.uuid4().hex}"
    messages = [(t, event, {**data, "prompt_id": prompt_id}) for t, event, data in messages]
    replay(server, clock, request, entry, messages)
    job = wait_for(lambda: stored_jobs(service.database_url, [f"comfyui-{prompt_id}"]))
    job = job[f"comfyui-{prompt_id}"]
    assert job["status"] == "success" and len(job["phases"]) == 7
    assert "a parser bug" in job["extra_params"]["comfyui"]["parse_error"]


def test_gpu_use_is_recorded_through_nvml_when_there_is_one(
        package, service, tmp_path, recording, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([FakeDevice("NVIDIA H100", util=80)]))
    server, clock = FakePromptServer(), ReplayClock()
    node = attach(package, server, service.url, tmp_path, clock=clock)
    assert node.gpu is not None and node.gpu.name == "NVIDIA H100"
    request, entry, messages = copy.deepcopy(recording[1])
    prompt_id = entry["prompt"][1] = f"gpu-{uuid.uuid4().hex}"
    messages = [(t, event, {**data, "prompt_id": prompt_id}) for t, event, data in messages]
    replay(server, clock, request, entry, messages)
    job = wait_for(lambda: stored_jobs(service.database_url, [f"comfyui-{prompt_id}"]))
    job = job[f"comfyui-{prompt_id}"]
    assert job["gpu_name"] == "NVIDIA H100"  # ComfyUI's own device name is not loaded here
    assert (job["gpu_util_avg_pct"], job["vram_total_mb"]) == (80, 24000)


def test_records_are_spooled_while_the_service_is_down_and_sent_when_it_is_back(
        package, tmp_path, recording):
    port = free_port()
    server, clock = FakePromptServer(), ReplayClock()
    node = attach(package, server, f"http://127.0.0.1:{port}", tmp_path, clock=clock,
                  retry_after_s=0.5, resend_every_s=0.5)
    ids = [replay(server, clock, *prompt) for prompt in recording[:5]]
    spooled = wait_for(lambda: len(node.spool.pending()) == 5 and node.spool.pending())
    assert [record["job_id"] for record in spooled] == [f"comfyui-{i}" for i in ids]
    process, database_url = start_service(tmp_path, port)
    try:
        stored = wait_for(lambda: len(found := stored_jobs(database_url, [
            f"comfyui-{i}" for i in ids])) == 5 and found)
        assert node.spool.pending() == []
        assert all(job.get("phases") for job in stored.values()
                   if job["job_type"] != "comfyui-cache-hit")
    finally:
        stop(process)


# -- a misbehaving service ----------------------------------------------------------------------
class OddService(http.server.BaseHTTPRequestHandler):
    """Answers every POST with `body` (HTTP 200), or drips: its status line (``drip="status"``)
    or its body (``drip="body"``) one byte every 0.2 s until the test ends."""
    body, drip, stopped = b"", None, threading.Event()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.drip == "status":
            self.wfile.write(b"HTTP/1.1 ")
            self._drip()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body) if not self.drip else 10_000))
        self.end_headers()
        self.wfile.write(self.body) if not self.drip else self._drip()

    def _drip(self):
        while not self.stopped.wait(0.2):
            self.wfile.write(b" ")
            self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def odd_service():
    """A function: (body, drip) → the URL of a service answering so."""
    servers = []

    def start(body=b"", drip=None):
        handler = type("Handler", (OddService,), {"body": body, "drip": drip,
                                                  "stopped": threading.Event()})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append((httpd, handler))
        return f"http://127.0.0.1:{httpd.server_address[1]}"
    yield start
    for httpd, handler in servers:
        handler.stopped.set()
        httpd.shutdown()


@pytest.mark.parametrize("drip", ["status", "body"])
def test_a_dripping_service_is_given_up_at_the_request_timeout(drip, package, odd_service):
    client = importlib.import_module(f"{package.__name__}.client")
    service = client.ServiceClient(odd_service(drip=drip))
    outcome = within(10, lambda: service.estimate(graph(), None, None, timeout=1.0))
    assert isinstance(outcome.get("error"), client.ServiceUnavailable), outcome
    assert service.resting


@pytest.mark.parametrize("body", [b"[1, 2, 3]", b"null", b"3", b'"text"',
                                  b'{"big": "' + b"x" * 2_000_000 + b'"}'])
def test_an_answer_that_is_not_a_json_object_never_loses_the_record(
        body, package, tmp_path, recording, odd_service):
    server, clock = FakePromptServer(), ReplayClock()
    node = attach(package, server, odd_service(body), tmp_path, clock=clock)
    prompt_id = replay(server, clock, *copy.deepcopy(recording[0]))
    spooled = wait_for(lambda: node.spool.pending())
    assert [record["job_id"] for record in spooled] == [f"comfyui-{prompt_id}"]
    assert server.events("perflib.estimate") == [] and node.board.view(prompt_id) is None


@pytest.mark.parametrize("answer", [
    [1, 2, 3], None, {}, {"predicted_time_seconds": "soon"},
    {"predicted_time_seconds": True}, {"predicted_time_seconds": float("nan")}])
def test_an_answer_that_is_not_an_estimate_is_no_estimate(answer, package):
    estimates = importlib.import_module(f"{package.__name__}.estimate_board")
    server = FakePromptServer()
    board = estimates.EstimateBoard(lambda graph, previous: answer, server.send_sync,
                                    server.prompt_queue.get_current_queue_volatile, 5.0)
    board.submitted({"prompt": graph(), "prompt_id": "p1"})
    server.prompt_queue.put((0, "p1", graph(), {}, ["9"], {}))
    board.queue_changed()
    server.prompt_queue.start("p1")
    board.started("p1")
    assert server.events("perflib.estimate") == []
    assert board.view("p1") is None and board.prediction("p1") is None


def test_a_dripping_service_never_stalls_the_records(package, tmp_path, recording, odd_service):
    """Each request ends by its timeout: the prompt starts, the service is then left alone (the
    next prompts wait for nothing), and the records reach the spool."""
    server, clock = FakePromptServer(), ReplayClock()
    node = attach(package, server, odd_service(drip="body"), tmp_path, clock=clock,
                  estimate_timeout_s=1.0, record_timeout_s=1.0)
    ids = [replay(server, clock, *copy.deepcopy(prompt)) for prompt in recording[:3]]
    spooled = wait_for(lambda: len(node.spool.pending()) == 3 and node.spool.pending(),
                       timeout=15)
    assert [record["job_id"] for record in spooled] == [f"comfyui-{i}" for i in ids]
    assert node.client.resting and node._events.empty()


# -- the browser panel --------------------------------------------------------------------------
PANEL_CHECK = """
import { describe } from "./extensions/perflib_estimate/perflib.js";
const queued = {predicted_time_seconds: 42, uncertainty_range: [35, 50],
                queue: {state: "queued", expected_start_seconds: 120}};
console.log(JSON.stringify([
  describe(queued, 0), describe(queued, 119.5),
  describe({...queued, predicted_time_seconds: 300, uncertainty_range: [80, 400],
            queue: {state: "running"}}, 0),
  globalThis.registered.name]));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_panel_says_how_long_and_when_it_starts(comfyui_dir, tmp_path):
    """The frontend extension, loaded as ComfyUI's page loads it (its app/api modules stood in
    for), words an estimate as the issue asks."""
    installed = install_node(comfyui_dir)
    site = tmp_path / "site"
    shutil.copytree(installed.path / "web", site / "extensions" / PACKAGE_NAME)
    (site / "scripts").mkdir()
    (site / "scripts" / "app.js").write_text(
        "export const app = {registerExtension(e) { globalThis.registered = e; }};\n")
    (site / "scripts" / "api.js").write_text(
        "export const api = {addEventListener() {}, fetchApi() {}};\n")
    (site / "package.json").write_text('{"type": "module"}\n')
    (site / "check.js").write_text(PANEL_CHECK)
    done = subprocess.run(["node", "check.js"], cwd=site, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "≈ 42 s (35–50 s), starts in ~2 min", "≈ 42 s (35–50 s), starts next",
        "≈ 5 min (80 s–7 min)", "perflib.estimate"]
