"""The sample app of `make e2e-kind`: `order` (one Deployment per version) and the load generator that calls it.

    python app.py serve                 # GET / answers after LATENCY_MS (+-20 %), 500 with probability ERROR_RATIO
    python app.py load --url URL --rps 20 --beta-fraction 0.1 [--duration SECONDS]

Settings of `serve` come from the environment, so a Deployment sets them: VERSION (what the answer says),
ERROR_RATIO (0..1), LATENCY_MS, PORT (8080). `load` sends requests at a steady rate, a fraction of them
with the header `user-group: beta` (the A/B route of examples/20-virtualservice.yaml), and prints the
status codes it got every 10 s; --duration 0 runs until stopped.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    version = "v1"
    error_ratio = 0.0
    latency_ms = 10.0

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, "ok\n")
            return
        time.sleep(self.latency_ms * random.uniform(0.8, 1.2) / 1000)
        if random.random() < self.error_ratio:
            self._answer(500, f"order {self.version}: failing on purpose (ERROR_RATIO={self.error_ratio})\n")
        else:
            self._answer(200, f"order {self.version}\n")

    def _answer(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # one line per request is noise here
        pass


def server(port: int, host: str = "") -> ThreadingHTTPServer:
    Handler.version = os.environ.get("VERSION", "v1")
    Handler.error_ratio = float(os.environ.get("ERROR_RATIO", "0"))
    Handler.latency_ms = float(os.environ.get("LATENCY_MS", "10"))
    return ThreadingHTTPServer((host, port), Handler)


def load(
    url: str, rps: float, beta_fraction: float, duration: float, out: object = sys.stdout
) -> collections.Counter[str]:
    """Send requests at `rps` for `duration` seconds (0: forever); return the count of each status code."""
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def call() -> None:
        headers = {"user-group": "beta"} if random.random() < beta_fraction else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
                code = str(response.status)
        except urllib.error.HTTPError as error:
            code = str(error.code)
        except OSError as error:
            code = type(error).__name__
        with lock:
            counts[code] += 1

    start = last_report = time.monotonic()
    sent = 0
    with ThreadPoolExecutor(max_workers=64) as pool:
        while duration <= 0 or time.monotonic() - start < duration:
            pool.submit(call)
            sent += 1
            time.sleep(max(0.0, start + sent / rps - time.monotonic()))
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                with lock:
                    print(f"load: {sent} sent, {dict(counts)}", file=out, flush=True)  # type: ignore[call-overload]
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    gen = sub.add_parser("load")
    gen.add_argument("--url", required=True)
    gen.add_argument("--rps", type=float, default=20.0)
    gen.add_argument("--beta-fraction", type=float, default=0.1)
    gen.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until stopped")
    args = parser.parse_args(argv)
    if args.command == "serve":
        httpd = server(int(os.environ.get("PORT", "8080")))
        print(
            f"order {Handler.version} on :{httpd.server_address[1]}, error ratio {Handler.error_ratio}, "
            f"latency {Handler.latency_ms} ms",
            flush=True,
        )
        httpd.serve_forever()
        return 0
    print(f"load: {args.rps} requests/s to {args.url}, {args.beta_fraction:.0%} with user-group: beta", flush=True)
    counts = load(args.url, args.rps, args.beta_fraction, args.duration)
    print(f"load: done, {dict(counts)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
