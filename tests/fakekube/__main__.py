"""Serve the fake API server standalone: ``python -m tests.fakekube --port N``.

For poking at it with kubectl or running the handler by hand: prints the URL
and the path of a kubeconfig pointing at it, then serves until interrupted
(or for ``--serve-seconds``).
"""

import argparse
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path

from .server import FakeKube


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fakekube", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--run-seconds", type=float, default=0.05,
                        help="how long pods of images without a scenario run")
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="where to write the kubeconfig (default: a temporary file)")
    parser.add_argument("--serve-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with FakeKube(args.run_seconds, host=args.host, port=args.port) as fake:
        path = args.kubeconfig
        if path is None:
            handle, name = tempfile.mkstemp(prefix="fakekube-", suffix=".kubeconfig")
            os.close(handle)
            path = Path(name)
        fake.write_kubeconfig(path)
        print(f"url: {fake.url}", flush=True)
        print(f"kubeconfig: {path}", flush=True)
        done.wait(args.serve_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
