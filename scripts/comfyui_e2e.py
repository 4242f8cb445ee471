"""End-to-end check of the perflib ComfyUI node against a real ComfyUI on the CPU
(``make comfyui-e2e``; not part of ``make test``: it needs the ComfyUI source and torch).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/comfy-venv/bin/python make comfyui-e2e

1. Builds the random-weight test checkpoint ``tiny_sd15_random.safetensors`` into the checkout's
   ``models/checkpoints`` with ``../shared/comfyui/make_models.py`` if it is not there.
2. Starts ``perflib serve`` on a free port with a temporary SQLite database.
3. Runs ComfyUI ``--cpu`` without the node (its own ``--base-directory`` in a temporary folder,
   so the checkout is never changed), queues the prompts (small: 64-128 px, 2-6 steps, fixed
   seeds) and listens on its websocket; ``perflib comfyui collect --once`` then stores them, so
   the service's estimates are fitted on this machine.
4. Installs the node with ``perflib comfyui install`` into a second base directory and runs the
   same prompts with it.
5. Checks: a ``perflib.estimate`` message arrived for every prompt before its
   ``execution_start`` and ``GET /perflib/estimate/{id}`` answers; every prompt's job is stored
   with one phase per executed node (``"<id>:<class_type>"``); every output image is
   byte-identical to the one made without the node; ComfyUI serves the frontend extension.
   Prints what it saw and writes ``summary.json`` in the work folder; exits 1 if a check fails.

The websocket client is ``websocket-client`` (``pip install -e '.[comfyui-e2e]'``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
import websocket

from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases as phases
from tools.loadtest import free_port, wait_until_serving

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = "tiny_sd15_random.safetensors"
MAKE_MODELS = REPO.parent / "shared" / "comfyui" / "make_models.py"
# the checkpoint of the recorded runs (see ../shared/comfyui/NOTES.md)
MODEL_FLAGS = ["--channel-mult", "1", "2", "--transformer-depth", "0", "1",
               "--transformer-depth-middle", "1"]
TEXTS = ["a lighthouse at dusk, oil painting", "a bowl of ramen, top view",
         "a red fox in the snow"]
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "uni_pc"]
START_TIMEOUT_S = 300
RUN_TIMEOUT_S = 1200


def prompt_graphs(count: int, seed: int) -> list[dict]:
    """`count` small SD1.5 text-to-image graphs with fixed seeds."""
    draw = random.Random(seed)
    graphs = []
    for index in range(count):
        side = draw.choice([64, 96, 128])
        graphs.append({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "6": {"class_type": "CLIPTextEncode",
                  "inputs": {"text": draw.choice(TEXTS), "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode",
                  "inputs": {"text": "blurry, low quality", "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage",
                  "inputs": {"width": side, "height": draw.choice([64, 96, 128]),
                             "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {
                "seed": draw.randrange(2**32), "steps": draw.randint(2, 6),
                "cfg": draw.choice([1.0, 3.0, 4.5, 6.0]), "sampler_name": draw.choice(SAMPLERS),
                "scheduler": draw.choice(["normal", "karras"]), "denoise": 1.0,
                "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage",
                  "inputs": {"filename_prefix": f"e2e_{index:02d}", "images": ["8", 0]}},
        })
    return graphs


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Services:
    workdir: Path
    comfyui_dir: Path
    comfyui_python: Path
    threads: int
    database_url: str = ""
    service_url: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start_perflib(self) -> None:
        self.database_url = f"sqlite:///{self.workdir / 'perflib.db'}"
        Store(self.database_url).init_db()
        port = free_port()
        log_path = self.workdir / "perflib-serve.log"
        process = self._start([sys.executable, "-m", "perflib.serve", "--port", str(port),
                               "--database-url", self.database_url], log_path, REPO)
        wait_until_serving(port, process, log_path, timeout=START_TIMEOUT_S)
        self.service_url = f"http://127.0.0.1:{port}"

    def start_comfyui(self, base: Path, name: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        log_path = self.workdir / f"comfyui-{name}.log"
        process = self._start([str(self.comfyui_python), "main.py", "--cpu", "--listen",
                               "127.0.0.1", "--port", str(port), "--base-directory", str(base)],
                              log_path, self.comfyui_dir)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                _get_json(f"{url}/system_stats")
                return process, url
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not start; see {log_path}:\n"
                           + log_path.read_text(errors="replace")[-3000:])

    def perflib(self, *argv: str) -> str:
        """A ``perflib`` command on the temporary database; its output."""
        env = {**os.environ, "PERFLIB_DATABASE_URL": self.database_url}
        done = subprocess.run([sys.executable, "-m", "perflib.cli", *argv], env=env, text=True,
                              capture_output=True, cwd=REPO)
        if done.returncode:
            raise RuntimeError(f"perflib {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)

    def _start(self, argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERFLIB_")}
        env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process


def base_directory(workdir: Path, name: str, checkpoints: Path) -> Path:
    """A ComfyUI base directory of its own (custom nodes, outputs), sharing the checkpoints."""
    base = workdir / name
    for folder in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "models" / "checkpoints").symlink_to(checkpoints, target_is_directory=True)
    return base


# -- one run of the prompts ---------------------------------------------------------------------
@dataclass
class Run:
    name: str
    prompt_ids: list[str] = field(default_factory=list)
    messages: list[tuple[float, str, dict]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # sha256 of each prompt's image
    route_answers: dict[str, dict] = field(default_factory=dict)
    wall_seconds: float = 0.0
    record_check: tuple[list[str], dict] | None = None  # failures and counts, with the node
    frontend_failures: list[str] = field(default_factory=list)

    def of(self, prompt_id: str, event: str) -> list[tuple[float, dict]]:
        return [(t, data) for t, kind, data in self.messages
                if kind == event and data.get("prompt_id") == prompt_id]


def check_frontend(url: str, base: Path) -> list[str]:
    """ComfyUI lists the node's frontend extension and serves it as installed."""
    path = "/extensions/perflib_estimate/perflib.js"
    if path not in _get_json(f"{url}/extensions"):
        return [f"GET /extensions does not list {path}"]
    with urllib.request.urlopen(url + path, timeout=60) as response:
        served = response.read()
    installed = (base / "custom_nodes" / "perflib_estimate" / "web" / "perflib.js").read_bytes()
    return [] if served == installed else [f"{path} is not the installed file"]


def run_prompts(url: str, graphs: list[dict], base: Path, name: str,
                ask_route: bool) -> Run:
    """Queue every graph at once, follow the websocket until all have ended, hash outputs."""
    run, client_id = Run(name), f"perflib-e2e-{uuid.uuid4().hex[:8]}"
    socket = websocket.create_connection(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}",
                                         timeout=RUN_TIMEOUT_S)
    reader = threading.Thread(target=_read_messages, args=(socket, run), daemon=True)
    reader.start()
    started = time.monotonic()
    for graph in graphs:
        answer = _post_json(f"{url}/prompt", {"prompt": graph, "client_id": client_id})
        run.prompt_ids.append(answer["prompt_id"])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    if ask_route:  # once each estimate is out, most prompts still wait in the queue
        _wait(lambda: all(run.of(pid, "perflib.estimate") or _ended(run, pid)
                          for pid in run.prompt_ids), deadline, reader, f"{name}: estimates")
        run.route_answers = {pid: _get_json(f"{url}/perflib/estimate/{pid}", missing_ok=True)
                             for pid in run.prompt_ids}
    _wait(lambda: all(_ended(run, pid) for pid in run.prompt_ids), deadline, reader,
          f"{name}: prompts")
    run.wall_seconds = time.monotonic() - started
    socket.close()
    history = _get_json(f"{url}/history")
    run.outputs = [_output_hash(history[pid], base) for pid in run.prompt_ids]
    return run


def _wait(condition, deadline: float, reader: threading.Thread, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline or not reader.is_alive():
            raise RuntimeError(f"{what} did not all arrive")
        time.sleep(0.2)


def _read_messages(socket, run: Run) -> None:
    while True:
        try:
            message = socket.recv()
        except Exception:  # closed
            return
        if isinstance(message, str) and message:
            message = json.loads(message)
            if isinstance(message.get("data"), dict):
                run.messages.append((time.time(), message["type"], message["data"]))


def _ended(run: Run, prompt_id: str) -> bool:
    return any(run.of(prompt_id, end) for end in
               ("execution_success", "execution_error", "execution_interrupted"))


def _output_hash(entry: dict, base: Path) -> str:
    images = [image for output in entry.get("outputs", {}).values()
              for image in output.get("images", [])]
    digest = hashlib.sha256()
    for image in images:
        digest.update((base / "output" / image["subfolder"] / image["filename"]).read_bytes())
    return digest.hexdigest() if images else "no image"


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _get_json(url: str, missing_ok: bool = False) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return None
        raise


# -- checks -------------------------------------------------------------------------------------
def check_estimates(run: Run) -> tuple[list[str], list[dict]]:
    """Every prompt's estimate arrived before its execution_start; the route answered."""
    failures, rows = [], []
    for index, prompt_id in enumerate(run.prompt_ids):
        estimates, starts = run.of(prompt_id, "perflib.estimate"), run.of(prompt_id,
                                                                            "execution_start")
        ends = run.of(prompt_id, "execution_success")
        if not estimates or not starts or _position(run, prompt_id, "perflib.estimate") > \
                _position(run, prompt_id, "execution_start"):
            failures.append(f"prompt {index}: no estimate before its execution_start")
            continue
        if run.route_answers.get(prompt_id) is None:
            failures.append(f"prompt {index}: GET /perflib/estimate/{prompt_id} found nothing")
        received, estimate = estimates[0]
        rows.append({
            "prompt": index, "predicted_s": estimate["predicted_time_seconds"],
            "interval_s": estimate["uncertainty_range"],
            "actual_s": round(ends[0][1]["timestamp"] / 1000 - starts[0][1]["timestamp"] / 1000,
                              3) if ends else None,
            "queue_ahead": estimate["queue"]["jobs_ahead"],
            "eta_start_s": estimate["queue"]["expected_start_seconds"],
            "actual_start_s": round(starts[0][0] - received, 3)})
    return failures, rows


def _position(run: Run, prompt_id: str, event: str) -> int:
    return next(i for i, (_, kind, data) in enumerate(run.messages)
                if kind == event and data.get("prompt_id") == prompt_id)


def check_records(database_url: str, run: Run, graphs: list[dict]) -> tuple[list[str], dict]:
    """Every prompt stored once, with one phase per executed node named ``id:class_type``."""
    wanted = {f"comfyui-{pid}": graph for pid, graph in zip(run.prompt_ids, graphs)}
    deadline, stored = time.monotonic() + 60, {}
    while time.monotonic() < deadline and len(stored) < len(wanted):
        stored = _stored(database_url, list(wanted))
        time.sleep(0.5)
    failures = [f"{job_id} was not stored" for job_id in wanted if job_id not in stored]
    for job_id, names in stored.items():
        graph = wanted[job_id]
        expected = {f"{node}:{graph[node]['class_type']}" for node in graph}
        if not names or not set(names) <= expected:
            failures.append(f"{job_id}: phases {names} are not nodes of its graph")
    counts = {"stored": len(stored), "phases": sum(len(n) for n in stored.values())}
    return failures, counts


def _stored(database_url: str, job_ids: list[str]) -> dict[str, list[str]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            found = {row.job_id: [] for row in conn.execute(
                sa.select(jobs.c.job_id).where(jobs.c.job_id.in_(job_ids)))}
            for row in conn.execute(sa.select(phases.c.job_id, phases.c.name)
                                    .where(phases.c.job_id.in_(list(found)))
                                    .order_by(phases.c.job_id, phases.c.seq)):
                found[row.job_id].append(row.name)
        return found
    finally:
        engine.dispose()


# -- the whole check ----------------------------------------------------------------------------
def ensure_checkpoint(comfyui_dir: Path, comfyui_python: Path, threads: int) -> Path:
    checkpoints = comfyui_dir / "models" / "checkpoints"
    if not (checkpoints / CHECKPOINT).is_file():
        if not MAKE_MODELS.is_file():
            raise SystemExit(f"{checkpoints / CHECKPOINT} is missing and {MAKE_MODELS} is not "
                             "there to build it (see ../shared/comfyui/NOTES.md)")
        print(f"building {CHECKPOINT} with {MAKE_MODELS.name} ...", flush=True)
        subprocess.run([str(comfyui_python), str(MAKE_MODELS), "--comfy", str(comfyui_dir),
                        "--out", str(checkpoints / CHECKPOINT), *MODEL_FLAGS], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return checkpoints


def run_check(args) -> dict:
    comfyui_dir, comfyui_python = Path(args.comfyui_dir).resolve(), Path(args.comfyui_python)
    checkpoints = ensure_checkpoint(comfyui_dir, comfyui_python, args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="perflib-comfyui-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    services = Services(workdir, comfyui_dir, comfyui_python, args.threads)
    graphs = prompt_graphs(args.prompts, args.seed)
    summary: dict = {"workdir": str(workdir), "prompts": args.prompts, "failures": []}
    try:
        services.start_perflib()
        plain = _phase(services, base_directory(workdir, "plain", checkpoints), "plain",
                       graphs, collect=True)
        base = base_directory(workdir, "with-node", checkpoints)
        summary["install"] = services.perflib("comfyui", "install", str(comfyui_dir),
                                              "--base-directory", str(base),
                                              "--service-url", services.service_url).strip()
        node = _phase(services, base, "with-node", graphs, collect=False)
    finally:
        services.stop_all()
    failures, rows = check_estimates(node)
    record_failures, counts = node.record_check
    same = [a == b for a, b in zip(plain.outputs, node.outputs)]
    summary.update(
        estimates=rows, records=counts, identical_outputs=sum(same),
        wall_seconds={"plain": round(plain.wall_seconds, 1),
                      "with_node": round(node.wall_seconds, 1)},
        failures=failures + record_failures + node.frontend_failures
        + [f"prompt {i}: output differs from the run without the node"
           for i, equal in enumerate(same) if not equal])
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    if not args.keep and not summary["failures"]:
        shutil.rmtree(workdir / "plain" / "output", ignore_errors=True)
    return summary


def _phase(services: Services, base: Path, name: str, graphs: list[dict], collect: bool) -> Run:
    print(f"{name}: starting ComfyUI ...", flush=True)
    process, url = services.start_comfyui(base, name)
    try:
        run = run_prompts(url, graphs, base, name, ask_route=not collect)
        if collect:
            print(services.perflib("comfyui", "collect", "--url", url, "--once").strip())
        else:  # before ComfyUI stops, so the node has sent every record
            run.record_check = check_records(services.database_url, run, graphs)
            run.frontend_failures = check_frontend(url, base)
        return run
    finally:
        services.stop(process)


def print_summary(summary: dict) -> None:
    print(f"\nwork folder: {summary['workdir']}")
    print(f"{'#':>3} {'predicted s':>11} {'interval s':>15} {'actual s':>9} {'ahead':>5} "
          f"{'ETA start s':>11} {'started s':>9}")
    for row in summary.get("estimates", []):
        low, high = row["interval_s"]
        print(f"{row['prompt']:>3} {row['predicted_s']:>11.2f} {f'{low:.1f}-{high:.1f}':>15} "
              f"{row['actual_s'] or float('nan'):>9.2f} {row['queue_ahead']:>5} "
              f"{row['eta_start_s']:>11.2f} {row['actual_start_s']:>9.3f}")
    print(f"estimates before execution_start: {len(summary.get('estimates', []))}/"
          f"{summary['prompts']}; jobs stored: {summary.get('records', {}).get('stored')} with "
          f"{summary.get('records', {}).get('phases')} phases; identical outputs: "
          f"{summary.get('identical_outputs')}/{summary['prompts']}; wall seconds "
          f"{summary.get('wall_seconds')}")
    for failure in summary["failures"]:
        print(f"FAILED: {failure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"),
                        help="the ComfyUI checkout (default $COMFYUI_DIR)")
    parser.add_argument("--comfyui-python", default=os.environ.get("COMFYUI_PYTHON"),
                        help="python of ComfyUI's environment, with torch (default "
                             "$COMFYUI_PYTHON)")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: steady on a shared machine; both runs use it)")
    parser.add_argument("--workdir", help="default: a new temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep every output image")
    args = parser.parse_args(argv)
    if not args.comfyui_dir or not args.comfyui_python:
        parser.error("set COMFYUI_DIR and COMFYUI_PYTHON (or --comfyui-dir/--comfyui-python)")
    summary = run_check(args)
    print_summary(summary)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
