"""GET requests to one ComfyUI server, each with a total deadline and a size cap.

A socket timeout bounds each read, not the request: a server that sends a byte every few seconds
would never time out. Here a timer cuts the connection when the request's deadline passes, which
wakes a read blocked anywhere (connecting, headers, body); the body is read in chunks up to a
byte cap. Redirects are never followed: the answer must come from the server asked.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 10.0  # the whole request: connect, headers and body
MAX_ANSWER_BYTES = 32 * 2**20
CHUNK_BYTES = 2**16


class ServerDown(Exception):
    """The server did not answer in time, or answered something that is not its API."""


class ComfyClient:
    """GET requests to one ComfyUI server, answers decoded from JSON."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 max_bytes: int = MAX_ANSWER_BYTES):
        self.url = url.rstrip("/")
        self.parts = urllib.parse.urlsplit(self.url if "//" in self.url
                                           else f"http://{self.url}")
        self.timeout = timeout
        self.max_bytes = max_bytes

    def get(self, path: str, **query: Any) -> Any:
        """The decoded answer to ``GET path?query``; raises ServerDown."""
        target = self.parts.path.rstrip("/") + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        deadline = time.monotonic() + self.timeout
        connection = self._connection()
        watchdog = threading.Timer(self.timeout, _cut, (connection,))
        watchdog.daemon = True
        watchdog.start()
        try:
            return json.loads(self._answer(connection, target))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = f"no whole answer within {self.timeout:g} s" \
                if time.monotonic() >= deadline else str(exc) or type(exc).__name__
            raise ServerDown(f"GET {self.url}{path}: {reason}") from None
        finally:
            watchdog.cancel()
            connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self.parts.scheme not in ("http", "https") or not self.parts.hostname:
            raise ServerDown(f"{self.url!r} is not an http(s) URL")
        kind = http.client.HTTPSConnection if self.parts.scheme == "https" \
            else http.client.HTTPConnection
        return kind(self.parts.hostname, self.parts.port, timeout=self.timeout)

    def _answer(self, connection: http.client.HTTPConnection, target: str) -> bytes:
        """The body of a 200 answer, at most max_bytes; anything else raises ServerDown."""
        connection.request("GET", target, headers={"Accept": "application/json"})
        response = connection.getresponse()
        if 300 <= response.status < 400:
            location = str(response.getheader("Location", ""))[:200]
            raise ServerDown(f"GET {self.url}{target}: answered {response.status}, a redirect "
                             f"to {location!r} (redirects are not followed)")
        if response.status != 200:
            raise ServerDown(f"GET {self.url}{target}: HTTP {response.status}")
        body = bytearray()
        while chunk := response.read(CHUNK_BYTES):
            body += chunk
            if len(body) > self.max_bytes:
                raise ServerDown(f"GET {self.url}{target}: answer over {self.max_bytes} bytes")
        return bytes(body)


def _cut(connection: http.client.HTTPConnection) -> None:
    """Shut the connection's socket down, so that a read blocked on it returns at once."""
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass
