"""A stand-in ComfyUI server for tests: a real stdlib HTTP server in a thread that answers
``/system_stats``, ``/queue`` and ``/history`` from a recording (ComfyUI v0.8.0's own bytes), as
the server stood at any chosen moment of the recorded run."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RECORDINGS = Path(__file__).resolve().parent / "fixtures" / "data" / "comfyui"


@dataclass
class Recording:
    """One recorded run: history in ComfyUI's order, queue snapshots in time order."""

    folder: Path
    history_bytes: bytes = b""
    history: dict = field(default_factory=dict)
    snapshots: list[dict] = field(default_factory=list)
    system_stats: bytes = b""

    @classmethod
    def load(cls, folder: Path) -> "Recording":
        recording = cls(folder)
        recording.history_bytes = (folder / "history.json").read_bytes()
        recording.history = json.loads(recording.history_bytes)
        recording.system_stats = (folder / "system_stats.json").read_bytes()
        lines = (folder / "queue-snapshots.jsonl").read_text().splitlines()
        recording.snapshots = sorted((json.loads(line) for line in lines), key=lambda s: s["t"])
        return recording

    def finished_by(self, epoch_seconds: float) -> dict:
        """History as the server held it at that moment: entries whose end event came first."""
        cutoff = epoch_seconds * 1000
        return {prompt_id: entry for prompt_id, entry in self.history.items()
                if entry["status"]["messages"][-1][1]["timestamp"] <= cutoff}


class FakeComfyUI:
    """Serves a recording. Set `history` (None: the whole recorded bytes), `queue`, `failing`
    (answer 500 to everything) and `redirect_to` (answer 302 to that URL) between polls."""

    def __init__(self, recording: Recording):
        self.recording = recording
        self.history: dict | None = None
        self.queue: dict = {"queue_running": [], "queue_pending": []}
        self.failing = False
        self.redirect_to: str | None = None
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeComfyUI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def at(self, snapshot: dict) -> None:
        """Stand where a queue snapshot was taken: its queue, and the history finished by the
        end of that snapshot (a collector reads /history after /queue)."""
        self.queue = snapshot["queue"]
        self.history = self.recording.finished_by(snapshot["t_end"])

    def answer(self, path: str, query: dict) -> bytes | None:
        if path == "/system_stats":
            return self.recording.system_stats
        if path == "/queue":
            return json.dumps(self.queue).encode()
        if path == "/history":
            return self._history(query)
        return None

    def _history(self, query: dict) -> bytes:
        """ComfyUI's get_history (execution.py, PromptQueue.get_history): max_items entries
        from offset (counted from the oldest), or the newest max_items without an offset."""
        if self.history is None and "max_items" not in query:
            return self.recording.history_bytes
        entries = list((self.recording.history if self.history is None else self.history)
                       .items())
        if "max_items" in query:
            count = int(query["max_items"][0])
            offset = int(query["offset"][0]) if "offset" in query else len(entries) - count
            entries = entries[max(0, offset):max(0, offset) + count]
        return json.dumps(dict(entries)).encode()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                fake.requests.append(self.path)
                if fake.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", fake.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = None if fake.failing else fake.answer(parts.path, parse_qs(parts.query))
                self.send_response(500 if fake.failing else 200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        return Handler


class DrippingServer:
    """A server that answers every request one byte at a time, a byte every `every` seconds,
    in its headers (`in_headers`) or in a long body, until the test ends."""

    def __init__(self, in_headers: bool = False, every: float = 0.5):
        self.in_headers = in_headers
        self.every = every
        self.stopped = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "DrippingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if server.in_headers:
                    self.drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000)
                else:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n")
                    self.drip(b"{" + b" " * 10_000)

            def drip(self, data: bytes) -> None:
                for byte in data:
                    if server.stopped.wait(server.every):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return

            def log_message(self, *args):
                pass

        return Handler
