"""What stands in front of the endpoints: this service's own Host names only, a request-body
size cap, JSON-only writes from this origin, and the write token."""
from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024
MAX_HOST_LENGTH = 255  # a DNS name's limit, with room for a port
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodySizeLimit:
    """Answers 413 to a request whose body is over `max_bytes`, whether its Content-Length says
    so or it streams more than it declared; the body is read once and handed on."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body is over {self.max_bytes} bytes"},
                                status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


class KnownHostsOnly:
    """Answers 400 to a request whose ``Host`` is not one of this service's names, reads
    included, so a page that rebinds its own DNS name to this machine reads and writes nothing.

    Accepted: loopback names and addresses, any IP address (a browser sends one only when it
    connected to that very address, so it cannot be rebound), the address the service binds,
    and the names in ``allowed_hosts`` (``*.example.com`` covers its subdomains). A request with
    no ``Host`` (no browser sends one) passes.
    """

    def __init__(self, app: ASGIApp, bound_host: str = "127.0.0.1",
                 allowed_hosts: tuple[str, ...] = ()):
        self.app = app
        self.names = frozenset({bound_host.lower(), *allowed_hosts})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host")
            if host is not None and not self.is_known(host):
                detail = (f"Host {host[:100]!r} is not a name of this service; "
                          "add it to PERFLIB_ALLOWED_HOSTS")
                await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def is_known(self, host: str) -> bool:
        """Whether `host` (a Host header: name or address, with or without a port) is ours."""
        if len(host) > MAX_HOST_LENGTH:
            return False
        try:
            name = urlsplit(f"//{host}").hostname
        except ValueError:
            return False
        if not name:
            return False
        return (is_loopback(name) or _is_address(name) or name in self.names
                or any(allowed.startswith("*.") and name.endswith(allowed[1:])
                       for allowed in self.names))


class JsonWritesFromThisOrigin:
    """Refuses a write (POST, PUT, PATCH, DELETE) that a web page of another site could make a
    visitor's browser send without asking it first — token or not:

    - 403 when an ``Origin`` header names another site (browsers send one with every POST;
      pages on this machine, and this service's own pages, are trusted);
    - 415 when its body is not ``application/json`` (a form post or a ``text/plain`` fetch). A
      write that sends no body at all may leave out the Content-Type.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            headers = Headers(scope=scope)
            refusal = _foreign_origin(headers) or _not_json(headers)
            if refusal is not None:
                status_code, detail = refusal
                await JSONResponse({"detail": detail}, status_code)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _foreign_origin(headers: Headers) -> tuple[int, str] | None:
    origin = headers.get("origin")
    if origin is None:
        return None
    parts = urlsplit(origin)
    if parts.scheme in ("http", "https") and parts.hostname and (
            is_loopback(parts.hostname) or parts.netloc.lower() == headers.get("host", "").lower()):
        return None
    return 403, f"Origin {origin[:200]!r} is another site: writes are refused from its pages"


def _not_json(headers: Headers) -> tuple[int, str] | None:
    content_type = headers.get("content-type")
    if content_type is None:
        no_body = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
        return None if no_body else (415, "Content-Type must be application/json (none was sent)")
    if content_type.split(";")[0].strip().lower() == "application/json":
        return None
    return 415, f"Content-Type must be application/json, not {content_type[:100]!r}"


def require_token(token: str | None):
    """A dependency that lets a request through only with ``Authorization: Bearer <token>``
    (any request when no token is configured)."""
    bearer = HTTPBearer(auto_error=False, description="PERFLIB_API_TOKEN")

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
