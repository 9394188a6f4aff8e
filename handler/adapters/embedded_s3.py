"""An S3-compatible endpoint inside the process, for local mode with no S3 configured.

The one-machine loop (client → bucket → handler → job → bucket → reply) needs an S3
endpoint. When none is configured, local mode starts moto's server (from the ``local``
extra) on a free port of the loopback interface and hands its endpoint and dummy
credentials to the jobs and the client. Objects live in memory and vanish with the
process: it is for demos and trials, not for data anyone wants to keep. With MinIO (or
any S3) configured through ``AWS_ENDPOINT_URL_S3``, it is not started.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handler.core.errors import ConfigError

log = logging.getLogger(__name__)

#: moto accepts any credentials; these only have to be present and consistent.
ACCESS_KEY = "cloud-worker-local"
SECRET_KEY = "cloud-worker-local-secret"
REGION = "us-east-1"
#: Variables that configure an S3 endpoint; any of them set means "use that one".
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def endpoint_configured(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


@dataclass
class EmbeddedS3:
    url: str
    #: The environment a job or client needs to reach it.
    env: dict[str, str]
    _server: Any

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0) -> EmbeddedS3:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ConfigError(
                "local mode without an S3 endpoint needs moto's server for its embedded S3: install "
                "mstc-cloud-worker[local], or set AWS_ENDPOINT_URL_S3 (and credentials) to use MinIO"
            ) from exc
        # werkzeug logs every request at INFO on its own; the jobs' transfers would drown
        # the handler's log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        server.start()
        bound_host, bound_port = server.get_host_and_port()
        url = f"http://{bound_host}:{bound_port}"
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": url,
        }
        log.info("embedded S3 (moto, in memory) listening on %s", url)
        return cls(url, env, server)

    def stop(self) -> None:
        self._server.stop()
        log.info("embedded S3 on %s stopped", self.url)
