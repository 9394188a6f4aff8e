"""Handlers under test: in a thread of the test process, or as a real subprocess
(``python -m handler.cli consume``) that tests may SIGTERM or SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.adapters.amqp import Broker, profile_lanes
from handler.core.config import Settings
from handler.service.backends.kubernetes import KubernetesBackend
from handler.service.consumer import Consumer
from handler.service.handling import RequestHandler
from tests.support.rabbit import delete_queues

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ThreadHandler:
    consumer: Consumer
    backend: KubernetesBackend
    thread: threading.Thread
    exit_code: list = field(default_factory=list)

    def stop(self, timeout: float = 15.0) -> int | None:
        self.consumer.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "handler did not stop"
        self.backend.close()
        return self.exit_code[0] if self.exit_code else None

    def wait(self, timeout: float) -> int | None:
        self.thread.join(timeout)
        return None if self.thread.is_alive() else self.exit_code[0]


class HandlerFactory:
    def __init__(self, amqp_url: str, kubeconfig: str, namespace: str, queue: str, tmp_path: Path) -> None:
        self.amqp_url, self.kubeconfig, self.namespace, self.queue = amqp_url, kubeconfig, namespace, queue
        self.tmp_path = tmp_path
        self.threads: list[ThreadHandler] = []
        self.processes: list[subprocess.Popen] = []
        self.extra_queues: set[str] = set()

    def env(self, **settings: Any) -> dict[str, str]:
        env = {
            "CLOUD_WORKER_AMQP_URL": self.amqp_url,
            "CLOUD_WORKER_QUEUE": self.queue,
            "CLOUD_WORKER_NAMESPACE": self.namespace,
            "CLOUD_WORKER_HTTP_PORT": "0",
            "CLOUD_WORKER_IMAGE_PULL_GRACE_SECONDS": "0.5",
            "CLOUD_WORKER_DEADLINE_SLACK_SECONDS": "5",
            "CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
            "KUBECONFIG": self.kubeconfig,
            "CLOUD_WORKER_LOCAL_STATE_DIR": str(self.tmp_path / "local-state"),
        }
        env.update({f"CLOUD_WORKER_{k.upper()}": str(v) for k, v in settings.items()})
        if env.get("CLOUD_WORKER_DEAD_LETTER_QUEUE"):
            self.extra_queues.add(env["CLOUD_WORKER_DEAD_LETTER_QUEUE"])
        if env.get("CLOUD_WORKER_PROFILES_FILE"):  # the queues of its profiles' lanes go too
            from handler.service.profiles import load_profiles

            s = Settings.from_env(env)
            self.extra_queues.update(lane.queue for lane in profile_lanes(s, load_profiles(s)))
        return env

    def settings(self, **settings: Any) -> Settings:
        return Settings.from_env(self.env(**settings))

    def start(self, **settings: Any) -> ThreadHandler:
        s = self.settings(**settings)
        backend = KubernetesBackend(s)
        backend.start()
        handler = RequestHandler(s, backend)  # with the profiles of CLOUD_WORKER_PROFILES_FILE, if set
        self.extra_queues.update(lane.queue for lane in profile_lanes(s, handler.profiles))
        consumer = Consumer(s, handler, Broker(s, handler.profiles))
        handle = ThreadHandler(consumer, backend, threading.Thread(target=lambda: None, daemon=True))
        handle.thread = threading.Thread(target=lambda: handle.exit_code.append(consumer.run()), daemon=True)
        handle.thread.start()
        self.threads.append(handle)
        return handle

    def spawn(self, *args: str, **settings: Any) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_WORKER_")}
        env.update(self.env(**settings))
        env["CLOUD_WORKER_LOG_FORMAT"] = "text"
        log = open(self.tmp_path / f"handler-{len(self.processes)}.log", "wb")  # noqa: SIM115 - closed by the OS
        proc = subprocess.Popen([sys.executable, "-m", "handler.cli", "consume", *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes.append(proc)
        return proc

    def log_of(self, index: int = -1) -> str:
        n = index if index >= 0 else len(self.processes) + index
        return (self.tmp_path / f"handler-{n}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        for handle in self.threads:
            if handle.thread.is_alive():
                handle.stop()
        delete_queues(self.amqp_url, self.queue, *self.extra_queues)
