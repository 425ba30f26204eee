"""rest-loop-review <run or sweep dir> [--host 127.0.0.1] [--port 8765]: serve the review page.

It listens on 127.0.0.1 unless --host says otherwise, prints its URL, and serves until interrupted.
A path that is neither a run nor a sweep, or a port it cannot bind, exits 2 naming it.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

from rest_loop import summary

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rest-loop-review", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run directory, or a sweep (Hydra multirun) directory")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shares the "
                             "page, and the right to add labels, with the network)")
    parser.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0: a free one)")
    args = parser.parse_args(argv)
    path = args.path.resolve()
    if not path.is_dir() or not summary.members(path):
        parser.error(f"{args.path} is neither a run directory (a manifest.json in it) nor a sweep directory "
                     "(sub-folders 0/, 1/, ... with a manifest.json or a FAILED file)")
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(128)  # connections wait in the backlog from now on, while the app is built
    except OSError as e:
        parser.error(f"--host {args.host} --port {args.port}: cannot listen there ({e.strerror or e})")
    return serve(path, sock, args.host)


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(path: Path, sock: socket.socket, host: str) -> int:
    import uvicorn

    from rest_loop.review.app import app

    port = sock.getsockname()[1]
    # on loopback a rebound DNS name gets no answer (Starlette cannot match an IPv6 Host header: let those through)
    hosts = LOOPBACK_NAMES if loopback(host) and ":" not in host else ["*"]
    web = app(path, hosts)
    shown = f"[{host}]" if ":" in host else host
    print(f"rest-loop-review: {path} at http://{shown}:{port}/ (Ctrl-C stops it)", flush=True)
    if not loopback(host):
        print(f"rest-loop-review: listening on {host}: anyone who can reach it can read the run and add labels",
              file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
