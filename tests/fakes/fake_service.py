"""A tiny HTTP service for supervisor tests (stdlib only, starts in ~50 ms).

    python tests/fakes/fake_service.py --port P [options]

GET /health answers 200, or 503 with --unhealthy, before --healthy-after S
seconds, or between the two --unhealthy-between times; GET /slow?s=1.5
answers after that long (an in-flight request for drain tests).

Behaviours: --require URL (exit 4 at start unless URL answers 200: proves
dependencies were healthy first), --crash-after S (exit 3 S seconds after it
first answered healthy), --exit-code N (exit at once), --ignore-sigterm,
--grandchild (start a child process that ignores SIGTERM and outlives us if
nobody kills the group), --say TEXT (print a line at start, repeatable),
--healthy-once FILE (an instance that finds FILE absent creates it and is
healthy; later instances stay unhealthy while FILE exists).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

START = time.monotonic()
CRASH_ARMED = threading.Event()  # --crash-after counts from the first healthy answer


def crash(name: str) -> None:
    print(f"{name} crashing on purpose", flush=True)
    os._exit(3)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="fake")
    p.add_argument("--unhealthy", action="store_true")
    p.add_argument("--healthy-after", type=float, default=0.0)
    p.add_argument("--healthy-once", default=None, metavar="FILE")
    p.add_argument("--unhealthy-between", type=float, nargs=2, default=None, metavar=("FROM", "TO"))
    p.add_argument("--require", action="append", default=[])
    p.add_argument("--crash-after", type=float, default=None)
    p.add_argument("--exit-code", type=int, default=None)
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--grandchild", action="store_true")
    p.add_argument("--say", action="append", default=[])
    return p.parse_args()


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path == "/health":
                age = time.monotonic() - START
                sick = args.unhealthy_between is not None and args.unhealthy_between[0] <= age < args.unhealthy_between[1]
                ready = not args.unhealthy and not sick and age >= args.healthy_after
                if ready and args.crash_after is not None and not CRASH_ARMED.is_set():
                    CRASH_ARMED.set()
                    threading.Timer(args.crash_after, crash, args=(args.name,)).start()
                self._answer(200 if ready else 503, b"ok" if ready else b"not ready")
            elif url.path == "/slow":
                time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
                self._answer(200, b"slow done")
            else:
                self._answer(404, b"no such path")

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *a: object) -> None:
            print(f"{args.name}: {fmt % a}", flush=True)

    return Handler


def check_requirements(urls: list[str]) -> None:
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                ok = resp.status == 200
        except OSError:
            ok = False
        if not ok:
            print(f"required {url} is not healthy", flush=True)
            sys.exit(4)
        print(f"required {url} is healthy", flush=True)


def main() -> None:
    args = parse_args()
    print(f"{args.name} starting on port {args.port} (pid {os.getpid()}, pgid {os.getpgid(0)})", flush=True)
    for line in args.say:
        print(line, flush=True)
    check_requirements(args.require)
    if args.healthy_once:
        if os.path.exists(args.healthy_once):
            args.unhealthy = True
            print(f"{args.healthy_once} exists: staying unhealthy", flush=True)
        else:
            open(args.healthy_once, "w").close()
    if args.exit_code is not None:
        sys.exit(args.exit_code)
    if args.grandchild:
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
        child = subprocess.Popen([sys.executable, "-c", code])
        print(f"grandchild pid {child.pid}", flush=True)
    server = ThreadingHTTPServer(("0.0.0.0", args.port), make_handler(args))
    server.daemon_threads = False  # server_close() waits for in-flight requests: a real drain
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        def on_term(*_: object) -> None:
            print(f"{args.name} got SIGTERM, draining", flush=True)
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, on_term)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    print(f"{args.name} stopped", flush=True)


if __name__ == "__main__":
    main()
