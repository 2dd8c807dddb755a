"""A fault-injecting forwarder between a registry client and a registry (tests/registry.py).

The client talks to :class:`FaultProxy` as it would to the registry (same scheme; under TLS
the proxy shows the registry's own certificate, so the same CA trusts both), and the proxy
forwards each request to the registry, streaming the answer back, unless a :class:`Fault`
applies to it. A fault is chosen per test and per path pattern (a regular expression searched
in the request's path), applies ``times`` times (then the proxy serves again) and counts its
hits:

* ``drop``: forward the headers and ``after`` bytes of the body, then reset the connection
  (RST, SO_LINGER 0): the connection lost mid-blob;
* ``truncate``: the same, but a clean end (FIN) short of the Content-Length;
* ``flip``: forward the whole body with the byte at ``offset`` (default: the middle) inverted;
* ``stall``: wait ``seconds`` before the answer, or after ``after`` bytes of the body;
* ``status``: answer ``status`` (429 with ``Retry-After: retry_after``, 500, 503...) with a
  registry's JSON error body, without asking the registry;
* ``redirect``: answer ``status`` (default 307) with ``Location: location`` (``{path}`` in
  it is the request's path), by default the proxy's own ``/_redirected{path}``: the blob
  read from the registry's storage directory, with no auth and Range requests answered, as
  registries send blobs to S3 or a CDN. A ``location`` on another scheme or host tests a
  client's refusals.

Range requests go through untouched (the registry serves them), so a client can resume after
a drop. Every request is kept in ``requests`` (method, path, Range header, whether it carried
an Authorization header, fault, status) for tests to check what the client did: a client
must not send the registry's credentials where it was redirected. Standard library only
(pytest for the fixture), one thread per connection. Test modules use the fixture with
``pytest_plugins = ["faultproxy"]`` (PYTEST_DONT_REWRITE: they may import this module too).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import io
import json
import os
import re
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field

import pytest

BLOBS = r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$"  # patterns for Fault.path
MANIFESTS = r"^/v2/.+/manifests/"
KINDS = ("drop", "truncate", "flip", "stall", "status", "redirect")
REDIRECTED = "/_redirected"  # the proxy's "object storage": the registry's answer, unauthenticated
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
ERROR_CODES = {429: "TOOMANYREQUESTS", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND"}
CHUNK = 64 * 1024


@dataclass
class Fault:
    kind: str
    path: str = ".*"
    method: str | None = None  # None: any
    times: int = 1  # then the proxy serves again; -1: every time
    after: int | None = None  # bytes of body before drop/truncate/stall (default: half)
    offset: int | None = None  # flip's byte (default: the middle)
    seconds: float = 0.0  # stall's
    status: int = 503  # status's (redirect's: 307 unless given)
    retry_after: str | None = None  # status's Retry-After header
    location: str | None = None  # redirect's target; {path} is the request's path
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times != 0
            and (self.method is None or self.method == method)
            and re.search(self.path, path) is not None
        )


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: bool
    fault: str | None = None
    status: int | None = None


class _Ended(Exception):
    """The proxy cut the client's connection on purpose."""


@dataclass
class FaultProxy:
    """Forwards 127.0.0.1:PORT to ``upstream`` (``host:port``); ``tls``: serve and forward HTTPS
    with the given server certificate, trusting ``ca`` for the upstream."""

    upstream: str
    tls: bool = False
    certificate: tuple[str, str] | None = None  # (cert, key) to serve TLS with
    ca: str | None = None
    storage: str | None = None  # the registry's storage directory, for /_redirected blobs
    faults: list[Fault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.closing = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as registry clients use

            def handle_one(self) -> None:
                proxy.forward(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one  # noqa: N815

            def log_message(self, *args) -> None:
                pass  # requests are kept in proxy.requests

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.certificate)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.upstream_context = ssl.create_default_context(cafile=self.ca)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def add(self, kind: str, path: str = ".*", **options) -> Fault:
        """Inject a fault of ``kind`` (KINDS) into the requests whose path matches ``path``."""
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, not {kind!r}")
        fault = Fault(kind, path, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def take(self, method: str, path: str, size: int | None = None) -> Fault | None:
        """The first fault that applies to this request, its count taken: before the answer
        (``size`` None) a status or a stall; then, knowing the body's ``size``, one that cuts,
        flips or stalls within it ("drop after 1 MiB" waits for a body of more than 1 MiB)."""
        with self.lock:
            for fault in self.faults:
                before = fault.kind in ("status", "redirect") or (
                    fault.kind == "stall" and fault.after is None
                )
                within = fault.offset if fault.kind == "flip" else fault.after
                if (size is None) != before or (size is not None and (within or 0) >= size):
                    continue
                if fault.matches(method, path):
                    fault.times -= fault.times > 0
                    fault.hits += 1
                    return fault
        return None

    def forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        authorization = "Authorization" in handler.headers
        record = Request(method, path, handler.headers.get("Range"), authorization)
        with self.lock:
            self.requests.append(record)
        body = read_request_body(handler)
        fault = self.take(method, path)
        record.fault = fault.kind if fault else None
        try:
            if fault and fault.kind == "status":
                record.status = fault.status
                return self.answer_status(handler, fault)
            if fault and fault.kind == "redirect":
                record.status = self.redirect(handler, fault)
                return None
            if fault and fault.kind == "stall" and fault.after is None:
                self.stall(handler, fault.seconds)
            if path.startswith(REDIRECTED + "/"):
                with self.stored(path, handler.headers.get("Range")) as (status, headers, data):
                    return self.relay(handler, status, headers, data, record)
            upstream = self.connect()
            try:
                # Header by header: clients send several Accept lines, one per media type.
                upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for name, value in handler.headers.items():
                    if name.lower() not in HOP_BY_HOP | {"content-length"}:
                        upstream.putheader(name, value)
                if body is not None:
                    upstream.putheader("Content-Length", str(len(body)))
                upstream.endheaders(body)
                response = upstream.getresponse()
                headers = response.getheaders()
                if response.getheader("Content-Length") is None and method != "HEAD":
                    data = response.read()  # chunked upstream: sent on with a length
                    headers.append(("Content-Length", str(len(data))))
                    response = io.BytesIO(data)
                self.relay(handler, getattr(response, "status", 200), headers, response, record)
            finally:
                upstream.close()
        except _Ended:
            handler.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            handler.close_connection = True  # the client went away

    def connect(self) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(
                self.upstream, timeout=60, context=self.upstream_context
            )
        return http.client.HTTPConnection(self.upstream, timeout=60)

    @contextlib.contextmanager
    def stored(self, path: str, byte_range: str | None):
        """(status, headers, file) of a blob, read from the registry's storage directory as
        object storage serves it: no registry, no auth, Range requests answered (RFC 9110)."""
        found = re.search(r"/blobs/sha256:([0-9a-f]{64})$", path)
        blob = found and os.path.join(
            self.storage or "/nonexistent", "docker/registry/v2/blobs/sha256",
            found.group(1)[:2], found.group(1), "data",
        )  # fmt: skip
        if not blob or not os.path.isfile(blob):
            yield 404, [("Content-Length", "0")], io.BytesIO()
            return
        size = os.path.getsize(blob)
        with open(blob, "rb") as file:
            headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
            asked = re.fullmatch(r"bytes=(\d+)-(\d*)", byte_range or "")
            if not asked:
                yield 200, [*headers, ("Content-Length", str(size))], file
                return
            start, end = int(asked.group(1)), min(int(asked.group(2) or size - 1), size - 1)
            if start > end:
                yield 416, [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")], file
                return
            file.seek(start)
            headers += [("Content-Range", f"bytes {start}-{end}/{size}")]
            yield 206, [*headers, ("Content-Length", str(end - start + 1))], file

    def relay(self, handler, status: int, headers: list, source, record: Request) -> None:
        """Send an answer to the client, with a fault that cuts, flips or stalls its body."""
        record.status = status
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        handler.send_response_only(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                handler.send_header(name, value.replace(self.upstream, self.host))
        if length is not None:
            handler.send_header("Content-Length", length)
        handler.end_headers()
        if handler.command == "HEAD":
            return
        size = int(length)
        fault = self.take(handler.command, handler.path, size)
        record.fault = fault.kind if fault else record.fault
        cut = fault.after if fault and fault.after is not None else size // 2
        flip = fault.offset if fault and fault.offset is not None else size // 2
        sent = 0
        while sent < size and (chunk := source.read(min(CHUNK, size - sent))):
            if fault and fault.kind == "flip" and sent <= flip < sent + len(chunk):
                i = flip - sent
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
            if fault and fault.kind in ("drop", "truncate", "stall") and sent + len(chunk) >= cut:
                handler.wfile.write(chunk[: cut - sent])
                if fault.kind != "stall":
                    end_connection(handler.connection, reset=fault.kind == "drop")
                    raise _Ended
                self.stall(handler, fault.seconds)
                chunk, sent, fault = chunk[cut - sent :], cut, None
            handler.wfile.write(chunk)
            sent += len(chunk)

    def stall(self, handler, seconds: float) -> None:
        """Wait ``seconds``; if the proxy closes meanwhile, reset the client's connection."""
        if self.closing.wait(seconds):
            end_connection(handler.connection, reset=True)
            raise _Ended

    def redirect(self, handler, fault: Fault) -> int:
        status = 307 if fault.status == 503 else fault.status  # 503: the field's default
        location = (fault.location or self.url + REDIRECTED + "{path}").format(path=handler.path)
        handler.send_response_only(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return status

    def answer_status(self, handler, fault: Fault) -> None:
        code = ERROR_CODES.get(fault.status, "UNAVAILABLE")
        error = {"code": code, "message": f"fault proxy: {fault.status}", "detail": None}
        data = json.dumps({"errors": [error]}).encode()
        handler.send_response_only(fault.status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        if fault.retry_after is not None:
            handler.send_header("Retry-After", fault.retry_after)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def close(self) -> None:
        self.closing.set()  # stalls end now
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def read_request_body(handler) -> bytes | None:
    """The request's body: by Content-Length, or chunked (Go clients upload so)."""
    if length := handler.headers.get("Content-Length"):
        return handler.rfile.read(int(length))
    if handler.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return None
    body = b""
    while size := int(handler.rfile.readline().split(b";")[0], 16):
        body += handler.rfile.read(size)
        handler.rfile.readline()
    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
        pass  # trailers
    return body


def end_connection(connection: socket.socket, *, reset: bool) -> None:
    """Close the client's connection: with an RST (``reset``, SO_LINGER 0, socket(7)), or a
    clean FIN."""
    with contextlib.suppress(OSError):
        if reset:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            connection.shutdown(socket.SHUT_WR)
        connection.close()


def proxy_for(registry) -> FaultProxy:
    """A FaultProxy in front of a tests/registry.py Registry, with its scheme and certificate."""
    certificates = registry.certificates
    return FaultProxy(
        registry.host,
        tls=registry.tls,
        certificate=(certificates.server, certificates.server_key),
        ca=certificates.ca,
        storage=registry.storage,
    )


@pytest.fixture
def fault_proxy():
    """``proxy(registry) -> FaultProxy`` in front of it; all closed when the test ends."""
    proxies = []

    def start(registry) -> FaultProxy:
        proxies.append(proxy_for(registry))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()
