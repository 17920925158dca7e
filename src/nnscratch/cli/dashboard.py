"""``nnscratch dashboard [RUNS_DIR]`` and the ``--dashboard [PORT]`` of compare/train/finetune."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from nnscratch.errors import UsageError


def add_dashboard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                   help="the folder of runs to show (default: runs/)")
    p.add_argument("--port", type=int, default=0, help="the port (default: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default: 127.0.0.1, this machine only; another one "
                        "shows your runs to the network, with a warning)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser")


def start_server(runs_dir: Path, host: str = "127.0.0.1", port: int = 0, flag: str = "--port"):
    """A dashboard server for ``runs_dir`` (bound now: a taken port is a one-line error naming ``flag``)."""
    from nnscratch.dashboard.server import LOOPBACK, make_server

    if not 0 <= port <= 65535:
        raise UsageError(f"{flag} {port} is not a port number; give one in 1-65535 (or 0: a free one)")
    try:
        server = make_server(runs_dir, host, port)
    except socket.gaierror as exc:  # the host name, not the port, is the problem
        raise UsageError(f"--host {host}: no such address here ({exc.strerror or exc}); "
                         "use --host 127.0.0.1 (the default) or an address of this machine") from None
    except OSError as exc:
        raise UsageError(f"{flag} {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                         f"choose another port, or {flag} 0 for a free one") from None
    if host not in LOOPBACK:
        print(f"nnscratch: warning: --host {host}: the dashboard (your runs, read-only) can be reached by "
              "anyone on the network; use the default 127.0.0.1 unless you mean it", file=sys.stderr)
    return server


def run_dashboard(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UsageError(f"{runs_dir} is a file, not a folder; give the folder that holds your runs (default runs/)")
    server = start_server(runs_dir, args.host, args.port)
    print(f"nnscratch dashboard: {runs_dir}/ at {server.url} (Ctrl-C stops it)", flush=True)
    if not runs_dir.is_dir():
        print(f"  note: {runs_dir}/ does not exist yet; its runs appear as they start", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # the way to stop it: exit 0, the stop acted on
        from nnscratch.errors import clear_pending_stops

        clear_pending_stops()
        print("nnscratch dashboard: stopped")
    finally:
        server.server_close()
    return 0


def start_beside_run(out: Path, port: int) -> str:
    """``--dashboard [PORT]``: serve the folder holding ``out`` from a daemon thread (it ends with
    the run's process); returns the run's URL (``#name=NAME``: the page follows the run of that
    name that is training, once its staging folder appears)."""
    from urllib.parse import quote

    from nnscratch.dashboard.server import serve_in_background

    server = start_server(out.parent, "127.0.0.1", port, flag="--dashboard")
    serve_in_background(server)
    return f"{server.url}#name={quote(out.name)}"
