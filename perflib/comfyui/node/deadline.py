"""HTTP exchanges that end by a deadline, however the other end answers.

``urllib``'s timeout bounds each socket operation, so a service that drips its answer (a byte
every second) holds a request for as long as it drips. Here each operation (connecting,
sending, every read of the status line, headers and body) is given only the time left before
the request's deadline, so the whole exchange ends by it. Redirects are not followed (the node
only POSTs, and a redirected POST would lose its body). The deadline also bounds the TLS
handshake and a proxy tunnel, but per read: they run before the first request byte.
"""
from __future__ import annotations

import http.client
import io
import time
import urllib.request


def time_left(deadline: float) -> float:
    """Seconds until `deadline` (``time.monotonic``); TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no complete answer before the deadline")
    return left


class _DeadlineReader(io.RawIOBase):
    """The socket's reads, each given only the time left."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open while read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(time_left(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """A connected socket whose sends and reads end by the deadline."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def sendall(self, data) -> None:
        self._sock.settimeout(time_left(self._deadline))  # bounds the whole sendall
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _DeadlineConnection:
    """Mixed into an ``http.client`` connection: connects within the time left, then every
    socket operation ends by ``deadline``."""

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        self.timeout = time_left(self.deadline)
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self.deadline)


class _DeadlineHTTP(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _DeadlineHTTPS(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _DeadlineOpening:
    """Mixed into urllib's HTTP(S) handler: opens with the request's ``deadline``."""

    def do_open(self, http_class, request, **connection_args):
        connection = _DeadlineHTTPS if issubclass(http_class, http.client.HTTPSConnection) \
            else _DeadlineHTTP
        return super().do_open(_with_deadline(connection, request.deadline), request,
                               **connection_args)


def _with_deadline(connection: type, deadline: float):
    return lambda *args, **kwargs: connection(*args, deadline=deadline, **kwargs)


class _HTTPHandler(_DeadlineOpening, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineOpening, urllib.request.HTTPSHandler):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler, _NoRedirect)


def open_by(request: urllib.request.Request, deadline: float):
    """``urlopen(request)``, every part of the exchange (reading the answer too) ending by
    `deadline` (``time.monotonic``)."""
    request.deadline = deadline
    return _OPENER.open(request, timeout=time_left(deadline))
