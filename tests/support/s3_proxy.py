"""A fault-injecting HTTP proxy in front of a local S3 endpoint, for tests.

Clients reach the proxy through ``AWS_ENDPOINT_URL`` (boto3 and, through
tasks.storage.arrow_s3_filesystem, pyarrow); it forwards each request to the real endpoint
(moto's server) unless a rule of its schedule fires, and then answers with the rule's fault:

- ``INTERNAL_ERROR``: HTTP 500 with S3's ``InternalError`` body, nothing forwarded;
- ``SLOW_DOWN``: HTTP 503 with S3's ``SlowDown`` body (throttling), nothing forwarded;
- ``RESET``: the connection is reset after the request line and headers, before the body is
  read and before anything is forwarded (the client sees its request cut off);
- ``RESET_AFTER_FORWARD``: the request reaches the endpoint (a PUT lands), then the connection
  is reset instead of answering (the client cannot tell whether it worked).

A :class:`FaultRule` matches on the HTTP method and a regular expression searched in the
request path (``/bucket/key``), fires on every ``every``-th matching request and at most
``times`` times (``None``: for ever, a persistent failure). The first rule that fires wins.
The proxy listens on 127.0.0.1 only, forwards only to a loopback endpoint, and bounds what
it holds: request bodies up to :data:`MAX_BODY` bytes, socket timeouts on both sides.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

MAX_BODY = 256 * 1024 * 1024
SOCKET_TIMEOUT_S = 60.0
# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy recomputes.
_NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}


class Fault(StrEnum):
    INTERNAL_ERROR = "internal_error"
    SLOW_DOWN = "slow_down"
    RESET = "reset"
    RESET_AFTER_FORWARD = "reset_after_forward"


_ERROR_ANSWERS = {
    Fault.INTERNAL_ERROR: (500, "InternalError", "We encountered an internal error."),
    Fault.SLOW_DOWN: (503, "SlowDown", "Please reduce your request rate."),
}


@dataclass(frozen=True)
class FaultRule:
    """Inject ``fault`` into every ``every``-th request matching ``method`` and ``path``."""

    fault: Fault
    method: str | None = None  # "PUT", "GET", ...; None matches any method
    path: str = ""  # a regex searched in the request path; "" matches any path
    every: int = 1
    times: int | None = None  # at most this many injections; None: persistent

    def __post_init__(self) -> None:
        if self.every < 1 or (self.times is not None and self.times < 0):
            raise ValueError(f"every must be >= 1 and times >= 0: {self}")


@dataclass(frozen=True)
class Injection:
    method: str
    path: str
    fault: Fault
    client: str  # the first word of the User-Agent: "Boto3/...", "aws-sdk-cpp/..." (pyarrow)


class _Schedule:
    """The rules and their counters; shared by the handler threads, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[tuple[FaultRule, re.Pattern[str]]] = []
        self._matched: Counter[int] = Counter()
        self._fired: Counter[int] = Counter()
        self.injections: list[Injection] = []
        self.requests: Counter[str] = Counter()  # forwarded or not, by method

    def replace(self, rules: Sequence[FaultRule]) -> None:
        with self._lock:
            self._rules = [(rule, re.compile(rule.path)) for rule in rules]
            self._matched.clear()
            self._fired.clear()
            self.injections.clear()
            self.requests.clear()

    def decide(self, method: str, path: str, client: str) -> Fault | None:
        with self._lock:
            self.requests[method] += 1
            for index, (rule, pattern) in enumerate(self._rules):
                if rule.method not in (None, method) or not pattern.search(path):
                    continue
                self._matched[index] += 1
                exhausted = rule.times is not None and self._fired[index] >= rule.times
                if exhausted or self._matched[index] % rule.every:
                    continue
                self._fired[index] += 1
                self.injections.append(Injection(method, path, rule.fault, client))
                return rule.fault
            return None


class S3FaultProxy:
    """A threaded proxy on 127.0.0.1 in front of ``upstream``, used as a context manager.

    Set ``AWS_ENDPOINT_URL`` to :attr:`url` in the environment of the processes that should
    see the faults; :meth:`set_rules` changes the schedule, :attr:`injections` logs each fault.
    """

    def __init__(self, upstream: str, rules: Sequence[FaultRule] = ()) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        if not ipaddress.ip_address(socket.gethostbyname(parts.hostname)).is_loopback:
            raise ValueError(f"the proxy only forwards to a loopback endpoint, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.schedule = _Schedule()
        self.schedule.replace(rules)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def set_rules(self, rules: Sequence[FaultRule]) -> None:
        """Replace the schedule; counters and the injection log start again from zero."""
        self.schedule.replace(rules)

    @property
    def injections(self) -> list[Injection]:
        return list(self.schedule.injections)

    def injected(self) -> Counter[Fault]:
        return Counter(i.fault for i in self.schedule.injections)

    def start(self) -> S3FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3-fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_class(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    timeout = SOCKET_TIMEOUT_S
    proxy: S3FaultProxy
    _fault: Fault | None = None
    _decided = False

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the schedule keeps the log that tests assert on

    def parse_request(self) -> bool:
        self._decided = False  # a new request on this (keep-alive) connection
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # Decide before "100 Continue": a reset then cuts the client off before its body.
        self._fault, self._decided = self._decide(), True
        if self._fault is Fault.RESET:
            self._reset()
            return False
        return super().handle_expect_100()

    def _decide(self) -> Fault | None:
        client = (self.headers.get("User-Agent") or "-").split()[0]
        return self.proxy.schedule.decide(self.command, urlsplit(self.path).path, client)

    def _serve(self) -> None:
        fault = self._fault if self._decided else self._decide()
        if fault is Fault.RESET:
            self._reset()
            return
        body = self._read_body()
        if fault in _ERROR_ANSWERS:
            self._answer_error(fault)
            return
        status, reason, headers, payload = self._forward(body)
        if fault is Fault.RESET_AFTER_FORWARD:
            self._reset()
            return
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _NOT_FORWARDED:
                self.send_header(name, value)
        length = _payload_length(self.command, status, headers, payload)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(_dechunk(self.rfile))
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError(f"request body of {length} bytes over the proxy's {MAX_BODY}")
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self.proxy.upstream
        upstream = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            return response.status, response.reason, response.getheaders(), payload
        finally:
            upstream.close()

    def _answer_error(self, fault: Fault) -> None:
        status, code, message = _ERROR_ANSWERS[fault]
        payload = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{urlsplit(self.path).path}</Resource>"
            "<RequestId>s3-fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        if fault is Fault.SLOW_DOWN:
            self.send_header("Retry-After", "1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0), without an answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


def _payload_length(
    method: str, status: int, headers: list[tuple[str, str]], payload: bytes
) -> int | None:
    """The Content-Length to send: a HEAD answer keeps the upstream's (the object's size)."""
    if method == "HEAD":
        declared = [v for k, v in headers if k.lower() == "content-length"]
        return int(declared[0]) if declared else None
    if status in (204, 304) or 100 <= status < 200:
        return None
    return len(payload)


def _dechunk(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """The data of an HTTP/1.1 chunked body (RFC 9112 7.1), trailers skipped."""
    total = 0
    while True:
        size = int(stream.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return
        total += size
        if total > MAX_BODY:
            raise ValueError(f"chunked request body over the proxy's {MAX_BODY} bytes")
        yield stream.read(size)
        stream.readline(1024)  # the CRLF after each chunk
