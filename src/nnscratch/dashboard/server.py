"""The dashboard's web server: the standard library's ``ThreadingHTTPServer``, GET and HEAD only.

Routes (anything else is 404)::

    /                         the page (static/index.html)
    /static/NAME              our app.js, style.css; plotly.min.js from the installed plotly package
    /api/runs                 the runs (JSON: views.Dashboard.run_list)
    /api/run/ID?points=N&smoothing=B&since=V   one run's charts (JSON: views.Dashboard.run_view)
    /run/ID/NAME.png          one of the run's figures

Nothing outside RUNS_DIR is ever served: a run ID must be the name of a run folder that
:func:`~nnscratch.dashboard.runs.scan` lists, and a figure one of the files it lists in it (real
paths inside RUNS_DIR, links followed); a path segment that decodes to ``..``, ``.``, or holds a
slash, a backslash or a NUL is refused before any lookup. So ``..``, ``%2e%2e``, ``%2f``,
absolute paths and symbolic links out of RUNS_DIR all get 404. Other methods get 405. Every
answer has its ``Content-Type`` and ``X-Content-Type-Options: nosniff``; error pages are one
plain line, never a stack trace.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from nnscratch.dashboard.runs import inside
from nnscratch.dashboard.views import DEFAULT_POINTS, Dashboard

STATIC = Path(__file__).parent / "static"
#: Our own files under static/, by URL name: the only ones served from there.
OWN_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
             "style.css": "text/css; charset=utf-8"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def plotly_js() -> Path | None:
    """``plotly.min.js`` of the installed ``plotly`` package (None: not installed)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def require_plotly() -> Path:
    """The path of plotly.min.js, or a one-line error naming the extra to install."""
    from nnscratch.errors import UsageError

    path = plotly_js()
    if path is None:
        raise UsageError("the dashboard draws its charts with the plotly package, which is not installed; "
                         "install it with: pip install 'nnscratch[dashboard]' (or pip install plotly)")
    return path


class DashboardServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding the :class:`~nnscratch.dashboard.views.Dashboard` it serves."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard, plotly: Path, quiet: bool = True) -> None:
        self.dashboard, self.plotly, self.quiet = dashboard, plotly, quiet
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, DashboardHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "nnscratch-dashboard"
    timeout = 60  # seconds an idle kept-alive connection (a closed laptop's tab) holds its thread
    protocol_version = "HTTP/1.1"

    # -- methods -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed: this server only reads (GET, HEAD)\n",
                   "text/plain; charset=utf-8", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # any other method name a client makes up
            return self._not_allowed
        raise AttributeError(name)

    # -- answers -------------------------------------------------------------------------------

    def _answer(self, head: bool) -> None:
        self._head = head
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # noqa: BLE001 - one line in the server's log, never a trace to the client
            print(f"nnscratch dashboard: error answering {self.path[:200]!r}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server's output)")

    def _route(self) -> None:
        url = urlsplit(self.path)
        segments = _segments(url.path)
        if segments is None:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        dash = self.server.dashboard
        if segments in ([], ["index.html"]):
            return self._file(STATIC / "index.html", OWN_FILES["index.html"])
        if len(segments) == 2 and segments[0] == "static":
            name = segments[1]
            if name == "plotly.min.js":
                return self._file(self.server.plotly, "text/javascript; charset=utf-8", cache=True)
            if name in OWN_FILES:
                return self._file(STATIC / name, OWN_FILES[name])
        elif segments == ["api", "runs"]:
            return self._json(dash.run_list())
        elif len(segments) == 3 and segments[:2] == ["api", "run"]:
            try:
                points = int(query.get("points", DEFAULT_POINTS))
                smoothing = float(query.get("smoothing", 0.6))
                if not 0.0 <= smoothing < 1.0:
                    raise ValueError
            except ValueError:
                return self._error(HTTPStatus.BAD_REQUEST, "points must be a whole number, smoothing in [0, 1)")
            view = dash.run_view(segments[2], points, smoothing, query.get("since"))
            if view is None:
                return self._json({"error": f"no run {segments[2]!r} in this folder (deleted or moved?)"},
                                  HTTPStatus.NOT_FOUND)
            return self._json(view)
        elif len(segments) == 3 and segments[0] == "run":
            run = dash.find(segments[1])
            if run is not None and segments[2].endswith(".png"):
                from nnscratch.dashboard.runs import figures

                if segments[2] in figures(run, dash.root):
                    return self._file(run.path / segments[2], "image/png", root=dash.root)
        return self._error(HTTPStatus.NOT_FOUND, "not found")

    def _file(self, path: Path, content_type: str, cache: bool = False, root: Path | None = None) -> None:
        if root is not None and not inside(path, root):
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        try:
            data = path.read_bytes()
        except OSError:  # removed between the listing and the read
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, data, content_type,
                   extra={"Cache-Control": "max-age=3600" if cache else "no-cache"})

    def _json(self, obj, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json", extra={"Cache-Control": "no-store"})

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, f"{int(status)} {message}\n".encode(), "text/plain; charset=utf-8")

    def send_error(self, code, message=None, explain=None) -> None:
        """The standard library's own errors (a malformed request line...): one plain line too."""
        self._head = getattr(self, "_head", False)
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self.close_connection = True
        self._send(status, f"{code} {status.phrase}\n".encode(), "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not getattr(self, "_head", False) and self.command != "HEAD":
            self.wfile.write(body)

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


def _segments(path: str) -> list[str] | None:
    """The URL path's segments, each percent-decoded; None when one of them could name another
    folder (``..``, ``.``, a slash, backslash or NUL once decoded) or the path is not absolute."""
    if not path.startswith("/"):
        return None
    raw = path.split("/")[1:]
    if raw and raw[-1] == "":
        raw = raw[:-1]
    segments = []
    for part in raw:
        try:
            name = unquote(part, errors="strict")
        except UnicodeDecodeError:
            return None
        if name in ("", ".", "..") or any(c in name for c in "/\\\0") or name != unquote(name):
            return None
        segments.append(name)
    return segments


def make_server(runs_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                quiet: bool = True) -> DashboardServer:
    """A server for ``runs_dir`` bound to ``host:port`` (port 0: a free one), not yet serving."""
    return DashboardServer((host, port), Dashboard(runs_dir), require_plotly(), quiet)


def serve_in_background(server: DashboardServer) -> threading.Thread:
    """Serve from a daemon thread (it ends with the process); ``server.shutdown()`` stops it."""
    thread = threading.Thread(target=server.serve_forever, name="nnscratch-dashboard", daemon=True)
    thread.start()
    return thread

