"""`DashboardServer`: the coordinator's HTTP server: the operator page, the JSON API and /metrics.

    server = DashboardServer("127.0.0.1:8080", DashboardApp(monitor, store, peer_timeout=120)).start()
    ...; server.stop()

Routes (GET and HEAD; any other method gets 405 with an Allow header, an unknown one 501):
  /                      the dashboard page (index.html, app.js, charts.js, style.css, favicon.svg)
  /api/v1/state          swarm state, summary, alerts, events and one page of peers (docs/api.md)
  /api/v1/history        per-round columns for the charts (docs/api.md)
  /metrics               Prometheus text format (coordinator/dashboard/prometheus.py)
  /api/v1/bootstrap      what a peer needs to join: run, key, DHT addresses (plumbing/bootstrap.py)
  /healthz               "ok" while the server runs
Every error is answered with a JSON body {"error": {"status": N, "message": "..."}}: a malformed or
unknown query parameter 400 naming it, an unknown path 404, and what the standard library refuses
before routing (a malformed request line 400, a request line over 64 KiB 414, a header line over
64 KiB or over 100 headers 431, HTTP/0.9 or 2+ 505); an unexpected error is logged and answered 500.
None of them stops the server. The page's assets are read once at start from the installed package
(no CDN, nothing fetched from elsewhere).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from hivemind.utils import get_dht_time

from coordinator.dashboard.documents import PEER_SORT_KEYS, HistoryQuery, PeerQuery, history_document, state_document
from coordinator.dashboard.prometheus import CONTENT_TYPE as METRICS_TYPE
from coordinator.dashboard.prometheus import build_registry, render_metrics
from coordinator.monitor import Monitor
from coordinator.security import token_matches
from coordinator.store import HistoryStore
from coordinator.views import PEER_STATES
from plumbing.errors import StartupError

log = logging.getLogger(__name__)

ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8"), "/favicon.svg": ("favicon.svg", "image/svg+xml")}
_PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_PEER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_PEER_SERIES = 32
_GZIP_ABOVE = 1024  # bytes
_MAX_LINE = 65536  # the standard library's limit for the request line and each header line
_MAX_MESSAGE = 300  # characters of an error message (they may quote the request)
_LINGER_S, _LINGER_BYTES = 1.0, 1 << 20  # what is read and dropped before closing after an error
_INTERNAL_ERROR = "internal error in the coordinator (see its log)"


class QueryError(ValueError):
    """A query parameter is malformed; answered 400 with this message."""


class DashboardAddressError(StartupError):
    """The dashboard cannot listen where http_listen says (port in use, address not local)."""


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


_TOKEN_COOKIE = "rankswarm_token"
# served without the dashboard token: probes, and what a joining peer needs (public key and addresses only)
_PUBLIC_PATHS = ("/healthz", "/api/v1/bootstrap")


def json_response(document: Any, status: int = 200) -> Response:
    body = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
    return Response(status, "application/json", body, {"Cache-Control": "no-store"})


def error_response(status: int, message: str, **headers: str) -> Response:
    return Response(status, "application/json", json.dumps({"error": {"status": status, "message": message}}).encode(),
                    {"Cache-Control": "no-store", **headers})


# ---------------------------------------------------------------- query parsing

class Query:
    """Query parameters with typed, bounded accessors; every parameter must be read or it is refused."""

    def __init__(self, text: str):
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=100)
        except ValueError as err:
            raise QueryError(f"malformed query string: {err}") from None
        self._values: dict[str, list[str]] = {}
        for key, value in pairs:
            self._values.setdefault(key, []).append(value)
        self._read: set[str] = set()

    def _one(self, name: str) -> str | None:
        self._read.add(name)
        values = self._values.get(name)
        if values is None:
            return None
        if len(values) > 1:
            raise QueryError(f"query parameter {name!r} given {len(values)} times; give it once")
        return values[0]

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self._one(name)
        if text is None:
            return default
        if not re.fullmatch(r"\d{1,19}", text) or not low <= int(text) <= high:
            raise QueryError(f"query parameter {name}={text!r} must be an integer from {low} to {high}")
        return int(text)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        text = self._one(name)
        if text is None:
            return default
        if text not in choices:
            raise QueryError(f"query parameter {name}={text!r} must be one of {', '.join(choices)}")
        return text

    def text(self, name: str, max_length: int) -> str:
        text = self._one(name) or ""
        if len(text) > max_length:
            raise QueryError(f"query parameter {name} is longer than {max_length} characters")
        return text

    def many(self, name: str) -> list[str]:
        self._read.add(name)
        return self._values.get(name, [])

    def finish(self) -> None:
        unknown = sorted(set(self._values) - self._read)
        if unknown:
            raise QueryError(f"unknown query parameter(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(sorted(self._read))}")


def parse_peer_query(query: Query) -> PeerQuery:
    states = query.text("peer_state", 200)
    chosen = tuple(s for s in states.split(",") if s) if states else ()
    unknown = [s for s in chosen if s not in PEER_STATES]
    if unknown:
        raise QueryError(f"query parameter peer_state has unknown state(s) {unknown}; use {', '.join(PEER_STATES)}")
    result = PeerQuery(offset=query.integer("peer_offset", 0, 0, 10**9),
                       limit=query.integer("peer_limit", 100, 1, 1000), states=chosen,
                       text=query.text("peer_q", 200), sort=query.choice("peer_sort", "state", PEER_SORT_KEYS),
                       descending=query.choice("peer_order", "asc", ("asc", "desc")) == "desc")
    query.finish()
    return result


def parse_history_query(query: Query, max_rounds: int) -> HistoryQuery:
    first = query.integer("from_round", 0, 0, 2**62)
    last = query.integer("to_round", 0, 0, 2**62)
    if last and first > last:
        raise QueryError(f"from_round={first} is after to_round={last}")
    limit = query.integer("max_rounds", min(500, max_rounds), 1, max_rounds)
    peers = query.many("peer")
    bad = [p for p in peers if not _PEER_ID.match(p)]
    if bad:
        raise QueryError(f"query parameter peer={bad[0]!r} is not a peer id (1-64 of A-Z a-z 0-9 _ -)")
    if len(set(peers)) > _MAX_PEER_SERIES:
        raise QueryError(f"at most {_MAX_PEER_SERIES} peer series per request, got {len(set(peers))}")
    query.finish()
    return HistoryQuery(first, last, limit, tuple(dict.fromkeys(peers)))


# ---------------------------------------------------------------- the application (routing, no sockets)

class DashboardApp:
    """Maps (method, path, query) to a Response; kept apart from the socket server so it is easy to test."""

    def __init__(self, monitor: Monitor, store: HistoryStore, *, peer_timeout: float, max_history_rounds: int = 1000,
                 clock: Callable[[], float] = get_dht_time, token: str | None = None,
                 bootstrap: Callable[[], dict[str, Any]] | None = None):
        self.monitor, self.store, self.clock, self.bootstrap = monitor, store, clock, bootstrap
        self.token = token  # None: open; else every path but _PUBLIC_PATHS needs it (header, cookie or ?token=)
        self.peer_timeout, self.max_history_rounds = peer_timeout, max_history_rounds
        package = importlib.resources.files("coordinator.dashboard")
        self.assets = {path: (package.joinpath(name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}
        self.metrics = build_registry(lambda: self.monitor.snapshot(self.clock()))
        self.routes: dict[str, Callable[[Query], Response]] = {
            "/api/v1/state": self._state, "/api/v1/history": self._history, "/metrics": self._metrics,
            "/api/v1/bootstrap": self._bootstrap,
            "/healthz": lambda query: Response(200, "text/plain; charset=utf-8", b"ok\n")}

    def handle(self, method: str, target: str, headers: Any = None) -> Response:
        parts = urlsplit(target)
        path = parts.path
        cookie = None
        if self.token is not None and path not in _PUBLIC_PATHS:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            offered = [value for key, value in pairs if key == "token"]
            if offered and token_matches(offered[-1], self.token):
                cookie = f"{_TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            elif not self._authorized(headers):
                return error_response(401, "this dashboard needs the operator's token: send 'Authorization: "
                                           "Bearer <token>' or open it once with ?token=<token>",
                                      **{"WWW-Authenticate": "Bearer"})
            parts = urlsplit(f"{path}?{urlencode([(k, v) for k, v in pairs if k != 'token'])}")
        response = self._route(method, path, parts)
        if cookie is not None:
            response.headers["Set-Cookie"] = cookie
        return response

    def _authorized(self, headers: Any) -> bool:
        if headers is None:
            return False
        if token_matches(headers.get("Authorization"), self.token):
            return True
        cookies = dict(item.strip().split("=", 1) for item in (headers.get("Cookie") or "").split(";") if "=" in item)
        return token_matches(cookies.get(_TOKEN_COOKIE), self.token)

    def _route(self, method: str, path: str, parts) -> Response:
        if path not in self.routes and path not in self.assets:
            if path.startswith("/api/"):
                return error_response(404, f"no API endpoint {path}; see docs/api.md (/api/v1/state, /api/v1/history, "
                                           "/api/v1/bootstrap)")
            return error_response(404, f"not found: {path}; the dashboard is at /")
        if method not in ("GET", "HEAD"):
            return error_response(405, f"{method} is not allowed on {path}; use GET", Allow="GET, HEAD")
        if path in self.assets:
            body, kind = self.assets[path]
            headers = {"Cache-Control": "no-cache"}
            if kind.startswith("text/html"):
                headers.update({"Content-Security-Policy": _PAGE_POLICY, "Referrer-Policy": "no-referrer"})
            return Response(200, kind, body, headers)
        try:
            return self.routes[path](Query(parts.query))
        except QueryError as err:
            return error_response(400, str(err))

    def _state(self, query: Query) -> Response:
        peers = parse_peer_query(query)
        return json_response(state_document(self.monitor.snapshot(self.clock()), peers,
                                            max_history_rounds=self.max_history_rounds))

    def _history(self, query: Query) -> Response:
        history = parse_history_query(query, self.max_history_rounds)
        return json_response(history_document(self.store, history, peer_timeout=self.peer_timeout))

    def _bootstrap(self, query: Query) -> Response:
        query.finish()
        if self.bootstrap is None:
            return error_response(503, "this server has no bootstrap info (not started by a coordinator)")
        return json_response(self.bootstrap())

    def _metrics(self, query: Query) -> Response:
        query.finish()
        return Response(200, METRICS_TYPE, render_metrics(self.metrics), {"Cache-Control": "no-store"})


# ---------------------------------------------------------------- the socket server

class _Handler(BaseHTTPRequestHandler):
    """Answers every request, also the ones the standard library refuses itself (a malformed or too long
    request line, too long or too many headers, an HTTP version other than 1.x, an unknown method), and
    any unexpected error, with a JSON error; the server goes on serving."""

    server_version = "rankswarm-coordinator"
    protocol_version = "HTTP/1.1"  # keep-alive: a polling page reuses one connection
    timeout = 30  # seconds an idle keep-alive connection is kept before its thread lets it go
    app: DashboardApp  # set on the subclass DashboardServer builds

    def handle_one_request(self) -> None:
        self._answered = False
        # until this request's line and headers are read (a kept-alive connection has the previous ones)
        self.command, self.requestline, self.request_version, self.headers = None, "", "", None
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True  # the client went away
        except Exception:  # deliberate: an unforeseen error ends this connection, never the server
            log.exception("dashboard request from %s failed", self.address_string())
            self.close_connection = True
            if not self._answered:
                self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, _INTERNAL_ERROR)

    def parse_request(self) -> bool:
        words = self.raw_requestline.split()
        if len(words) == 2:  # no version (HTTP/0.9, whose answers have no status line) or no target
            self.command, self.requestline = None, str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            if words[1].startswith(b"HTTP/"):
                self.send_error(HTTPStatus.BAD_REQUEST, f"request line {self.requestline!r} has no target")
            else:
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                                "HTTP/0.9 is not supported (the request line has no version); use HTTP/1.1")
            return False
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors as JSON, like the application's own; the connection closes after them."""
        if code == HTTPStatus.REQUEST_URI_TOO_LONG and not message:
            message = f"request line longer than {_MAX_LINE} bytes; the dashboard's URLs are much shorter"
        text = message or HTTPStatus(code).phrase
        if explain and explain not in text:
            text = f"{text}: {explain}"
        if len(text) > _MAX_MESSAGE:  # messages quote the request line: do not echo a whole one back
            text = text[:_MAX_MESSAGE] + "..."
        self.close_connection = True
        if not (getattr(self, "request_version", "") or "").startswith("HTTP/1."):
            self.request_version = "HTTP/1.0"  # the base class writes no status line for HTTP/0.9
        self._send(error_response(int(code), text))
        self._linger()

    def _respond(self) -> None:
        try:
            response = self.app.handle(self.command, self.path, self.headers)
        except Exception:  # deliberate: one broken request must not stop the dashboard
            log.exception("dashboard request %s %s failed", self.command, self.path)
            response = error_response(500, _INTERNAL_ERROR)
        if self.command not in ("GET", "HEAD"):  # its body (if any) is unread: end the connection after it
            self.close_connection = True
        self._send(response)
        if self.command not in ("GET", "HEAD"):
            self._linger()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _respond

    def _send(self, response: Response) -> None:
        body = response.body
        accepted = self.headers.get("Accept-Encoding", "") if self.headers is not None else ""  # None: refused early
        if len(body) > _GZIP_ABOVE and "gzip" in accepted:
            body = gzip.compress(body, compresslevel=5)
            response.headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        if self.close_connection:
            response.headers["Connection"] = "close"
        self._answered = True
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to tell it

    def _linger(self) -> None:
        """Read and drop what the client still sends, for a moment, before the connection closes: closing
        a socket with unread input resets the connection, and the client could lose the answer."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_S)
            deadline, dropped = time.monotonic() + _LINGER_S, 0
            while time.monotonic() < deadline and dropped < _LINGER_BYTES:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass  # timed out or the client closed first: either way the answer is out

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds up stop()
    request_queue_size = 64
    tls = None  # an ssl.SSLContext: connections are wrapped, their handshake runs in the connection's thread

    def get_request(self):
        connection, address = super().get_request()
        if self.tls is not None:
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request, client_address) -> None:
        log.exception("dashboard connection from %s failed", client_address)  # not the base class's stderr dump

    def server_activate(self) -> None:
        self._open: set[socket.socket] = set()  # keep-alive connections, closed by close_connections()
        self._open_lock = threading.Lock()
        super().server_activate()

    def finish_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def close_connections(self) -> None:
        """End every open connection: a stopped dashboard must not keep answering on kept-alive sockets."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class DashboardServer:
    """Serves a DashboardApp on `listen` (host:port, port 0 = any free one) from a background thread."""

    def __init__(self, listen: str, app: DashboardApp, *, tls=None):
        self.listen, self.app, self.tls = listen, app, tls  # tls: an ssl.SSLContext to serve HTTPS
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> DashboardServer:
        host, port = split_listen(self.listen)
        handler = type("DashboardHandler", (_Handler,), {"app": self.app})
        server_class = type("DashboardHTTPServer", (_Server,),
                            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET, "tls": self.tls})
        try:
            self._server = server_class((host, port), handler)
        except OSError as err:
            raise DashboardAddressError(
                f"the dashboard cannot listen on {self.listen} ({err.strerror or err}); change http_listen "
                f"(port 0 picks a free one, \"\" turns the dashboard off)") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="coordinator-http", daemon=True)
        self._thread.start()
        return self

    @property
    def address(self) -> str:
        """host:port the server listens on."""
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        host, port = self.address.rsplit(":", 1)
        shown = "127.0.0.1" if host == "0.0.0.0" else ("[::1]" if host == "[::]" else host)
        return f"{'https' if self.tls is not None else 'http'}://{shown}:{port}/"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and end open connections (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
