"""The seed's test job, rebuilt on the job toolkit.

Run as ``cloud-worker job -- python /app/main.py``: the toolkit has already downloaded
the inputs into ``INPUT_DIR`` and will upload whatever lands in ``OUTPUT_DIR``. Like the
seed's job it logs its environment, sleeps and, when all went well, prints ``SUCCESS`` as
its last line (the original's client test looks for that word in the job's log object);
it also summarises its inputs in ``OUTPUT_DIR/result.txt``.

Environment: ``SLEEP_SECONDS`` (default 5, as the seed), ``FAIL`` (set: exit non-zero
after writing the result; a number 1-255 is used as the exit code).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("python-test")

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(://)[^/@\s]+@")


def shown(name: str, value: str) -> str:
    """``value`` as it may appear in a log: secrets masked, URL credentials removed."""
    if _SECRET_NAME.search(name):
        return "***"
    return _URL_USERINFO.sub(r"\1***@", value)


def summarise(input_dir: Path) -> list[str]:
    lines = []
    for path in sorted(p for p in input_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lines.append(f"{path.relative_to(input_dir).as_posix()}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}")
    return lines


def main(environ: Mapping[str, str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in sorted(environ):
        log.info("env %s=%s", name, shown(name, environ[name]))
    input_dir = Path(environ.get("INPUT_DIR", "input"))
    output_dir = Path(environ.get("OUTPUT_DIR", "output"))
    files = summarise(input_dir)
    log.info("found %d input files in %s", len(files), input_dir)
    seconds = float(environ.get("SLEEP_SECONDS", "5"))
    log.info("sleeping %.1f s", seconds)
    time.sleep(seconds)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "result.txt").write_text(f"{len(files)} input files\n" + "".join(f"{line}\n" for line in files))
    log.info("wrote %s", output_dir / "result.txt")
    fail = environ.get("FAIL", "")
    if fail:
        code = int(fail) if fail.isdigit() and 1 <= int(fail) <= 255 else 1
        log.error("FAIL=%s is set: exiting with %d", fail, code)
        return code
    print("SUCCESS", flush=True)  # the original's last line, on stdout as it printed it
    return 0


if __name__ == "__main__":
    sys.exit(main(os.environ))
