"""The bench's world: a Kubernetes API server (the fake one, in this process, or the real
control plane of ``scripts/cluster.sh``: ``bench/cluster.py``), the real RabbitMQ, and the
processes under test (the handler, the baseline) as subprocesses.

Each measurement gets its own queue and namespace (and, on the fake, an empty fake
cluster), so nothing leaks between them; ``clocks`` takes the timestamps. What differs
between the two API servers is behind ``World``: where a subject's namespace and
credentials come from, the images of an instant and of a held Job, how a held Job is
finished, and how the subject's API requests are counted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pika

from bench import BenchError
from bench.clocks import JobTimes, Replies, connect

REPO = Path(__file__).resolve().parents[1]
#: First on the measured processes' path: hides test-only packages (see its module).
PRODUCTION_LIKE = REPO / "bench" / "prodlike"
EXCHANGE = "mstc.exchange"
BUCKET = "http://minio:9000/bench"


@dataclass
class Stage:
    """One measurement's queue and namespace, and the subject's credentials and settings
    there; every request in it gets a unique key."""

    queue: str
    namespace: str
    kubeconfig: Path
    #: Settings of the subject in this namespace (on the cluster: the chart's ConfigMap).
    env: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def next_key(self) -> str:
        self.counter += 1
        return f"r{uuid.uuid4().hex[:6]}{self.counter:05d}"


@dataclass
class Proc:
    """A process under test, its start times and its log."""

    popen: subprocess.Popen
    log_path: Path
    started: float
    started_wall: float
    #: The handler's /healthz, /readyz and /metrics port (None for the others).
    http_port: int | None = None
    exited: float | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def memory_mb(self) -> dict[str, float]:
        """Current (VmRSS) and peak (VmHWM) resident set size, in MB."""
        values = {}
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
        return {"rss_mb": values["VmRSS"], "peak_mb": values["VmHWM"]}

    def threads(self) -> int:
        return len(list(Path(f"/proc/{self.popen.pid}/task").iterdir()))

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far, to the nanosecond where the
        kernel allows: the sum of its live threads' run time (``/proc/<pid>/task/*/schedstat``),
        or the process's total in clock ticks (10 ms) when that is larger, i.e. when
        threads that have ended ran for more than a tick. ``/proc/<pid>/stat`` alone counts
        in ticks, which made a figure of 20 requests of 3.5 ms each uncertain by a seventh."""
        pid = self.popen.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        live = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                live += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread ended meanwhile
        return max(live / 1e9, ticks)

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"process did not exit within {timeout} s:\n{self.log()[-2000:]}") from exc
        self.exited = self.exited or time.monotonic()
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass(frozen=True)
class Subject:
    """How to run one contender: its command, its environment, its first-delivery marker."""

    name: str
    concurrent: bool  # takes --concurrency (the baseline handles one message at a time)

    def command(self, once: bool, concurrency: int) -> list[str]:
        if self.name == "baseline":
            return [sys.executable, "-m", "bench.baseline"]
        args = [sys.executable, "-m", "handler.cli", "consume", "--concurrency", str(concurrency)]
        return args + (["--once"] if once else [])

    def env(self, rig: Rig, stage: Stage, once: bool, http_port: int | None = None,
            poll: float | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_WORKER_")}
        env["KUBECONFIG"] = str(stage.kubeconfig)
        env["PYTHONPATH"] = str(PRODUCTION_LIKE)
        # An installed wheel ships compiled bytecode: let the first (uncounted) run cache it
        # rather than compile edited modules at every start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if self.name == "baseline":
            env.update(AMQP_URL=rig.amqp_url, QUEUE=stage.queue, NAMESPACE=stage.namespace, ONCE="1" if once else "0",
                       POLL_SECONDS=str(poll if poll is not None else rig.baseline_poll))
        else:
            # As deployed (on the cluster, the chart's ConfigMap first): JSON logs at INFO,
            # /healthz, /readyz and /metrics served (on a free port).
            env.update(stage.env)
            env.update(CLOUD_WORKER_AMQP_URL=rig.amqp_url, CLOUD_WORKER_QUEUE=stage.queue,
                       CLOUD_WORKER_NAMESPACE=stage.namespace, CLOUD_WORKER_HTTP_PORT=str(http_port or 0),
                       CLOUD_WORKER_HTTP_HOST="127.0.0.1", CLOUD_WORKER_LOG_FORMAT="json",
                       CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS="5")
        return env

    def first_delivery(self, log: str) -> float | None:
        """Wall-clock time of the first delivery, from the log line each subject writes then."""
        for line in log.splitlines():
            if self.name == "baseline" and " received request " in line:
                return float(line.split()[0])
            if self.name == "handler" and '"first delivery' in line:
                stamp = json.loads(line)["time"].replace("Z", "+00:00")
                return datetime.fromisoformat(stamp).timestamp()
        return None

    def ready(self, log: str) -> bool:
        marker = "consuming " if self.name == "baseline" else "connected to "
        return marker in log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HANDLER = Subject("handler", concurrent=True)
BASELINE = Subject("baseline", concurrent=False)


class World(Protocol):
    """The API server side of the bench: the fake (``FakeWorld``) or the real control plane
    (``bench.cluster.ClusterWorld``)."""

    name: str
    #: The image of a Job that succeeds at once, and of one that runs until ``finish``.
    instant: str
    hold: str

    def fresh(self) -> None:
        """Before each measurement: an empty API server where the world can give one."""

    def place(self, subject: Subject, workdir: Path) -> tuple[str, Path, dict[str, str]]:
        """A namespace for ``subject``, a kubeconfig with its credentials there, and its settings."""

    def finish(self, namespace: str, job_name: str) -> None:
        """End a held Job's pod now, successfully."""

    def settle(self) -> None:
        """Wait until the requests that follow a reply (the handler's PATCH) have been made."""

    def mark(self) -> Any:
        """The API server's request counts now, for ``requests_since``."""

    def requests_since(self, mark: Any) -> dict[str, Any]:
        """The subject's API requests since ``mark`` (the subject stopped: its watches ended),
        as ``{"requests": {"create", "log", "patch", "watch", "get" (a LIST or a read), "other",
        "total"}}``; the cluster adds the API server's own breakdown and its watch events."""

    def close(self) -> None: ...


class FakeWorld:
    """The fake API server of the tests (``tests.fakekube.FakeKube``), served in this
    process, a new empty one for each measurement: the fake keeps every object until its
    TTL, and its costs grow with what it holds."""

    name = "fake"
    instant = "scenario/succeed:0"
    hold = "scenario/hold"

    def __init__(self, times: JobTimes, workdir: Path) -> None:
        self.times = times
        self.workdir = workdir
        self.fake: Any = None
        self._clusters = 0
        self.fresh()

    def fresh(self) -> None:
        from tests.fakekube import FakeKube

        if self.fake is not None:
            self.fake.stop()
        self._clusters += 1
        self.fake = FakeKube(run_seconds=0.0).start()
        self.fake.on_write(self.times.record)
        self.kubeconfig = self.fake.write_kubeconfig(self.workdir / f"kubeconfig-{self._clusters}")

    def place(self, subject: Subject, workdir: Path) -> tuple[str, Path, dict[str, str]]:
        return f"bench-{uuid.uuid4().hex[:8]}", self.kubeconfig, {}

    def finish(self, namespace: str, job_name: str) -> None:
        self.fake.finish(namespace, job_name)

    def settle(self, quiet: float = 0.2, limit: float = 3.0) -> None:
        """Until the fake has served nothing new for ``quiet`` s (at most ``limit``)."""
        deadline, last = time.monotonic() + limit, -1
        while time.monotonic() < deadline and (now := self.fake.request_count()) != last:
            last = now
            time.sleep(quiet)

    def mark(self) -> Any:
        self.fake.reset_counts()
        return None

    def requests_since(self, mark: Any) -> dict[str, Any]:
        count = self.fake.request_count
        counts = {"create": count("POST", "jobs"), "log": count("GET", "log"), "patch": count("PATCH"),
                  "watch": count("WATCH"), "total": count()}
        # A LIST and a read of one object, both GETs: the fake does not tell them apart.
        counts["get"] = count("GET") - counts["log"] - counts["watch"]
        counts["other"] = counts["total"] - sum(v for k, v in counts.items() if k != "total")
        return {"requests": counts}

    def close(self) -> None:
        if self.fake is not None:
            self.fake.stop()


class Rig:
    def __init__(self, amqp_url: str, workdir: Path, baseline_poll: float = 1.0, queue_prefix: str = "bench",
                 world: str = "fake") -> None:
        self.amqp_url = amqp_url
        self.baseline_poll = baseline_poll
        #: What starts the name of every work queue of the run (``<prefix>.<random>.work``).
        self.queue_prefix = queue_prefix
        self.workdir = workdir
        self.times = JobTimes()
        self._queues: list[str] = []
        self._procs: list[Proc] = []
        self.world: World
        if world == "cluster":
            from bench.cluster import ClusterWorld

            self.world = ClusterWorld(self.times, workdir)
        else:
            self.world = FakeWorld(self.times, workdir)
        self.replies = Replies(amqp_url)
        self._publisher = connect(amqp_url)
        self.channel = self._publisher.channel()
        self.channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)

    @property
    def fake(self) -> Any:
        """The fake API server (the phases that exist only on it: seeded namespaces, primitives)."""
        return getattr(self.world, "fake", None)

    def fresh_cluster(self) -> None:
        self.world.fresh()

    def stage(self, subject: Subject) -> Stage:
        namespace, kubeconfig, env = self.world.place(subject, self.workdir)
        stage = Stage(f"{self.queue_prefix}.{uuid.uuid4().hex[:10]}.work", namespace, kubeconfig, env)
        self.channel.queue_declare(stage.queue, durable=True)  # the seed client's declaration
        self.channel.queue_bind(stage.queue, EXCHANGE, routing_key=stage.queue)
        self._queues.append(stage.queue)
        return stage

    def publish(self, stage: Stage, image: str, key: str | None = None) -> tuple[str, float]:
        """One request with a fresh key (its jobName and correlation id); returns it and its time."""
        key = key or stage.next_key()
        body = json.dumps({"image": image, "jobName": key, "inputBucketUrl": BUCKET}).encode()
        props = pika.BasicProperties(content_type="application/json", correlation_id=key,
                                     reply_to=self.replies.queue, delivery_mode=2)
        now = time.monotonic()
        self.channel.basic_publish(EXCHANGE, stage.queue, body, props)
        return key, now

    def spawn(self, subject: Subject, stage: Stage, *, once: bool = False, concurrency: int = 1,
              poll: float | None = None) -> Proc:
        log_path = self.workdir / f"{subject.name}-{len(self._procs)}.log"
        port = free_port() if subject.name == "handler" else None
        with open(log_path, "wb") as log:
            started_wall, started = time.time(), time.monotonic()
            popen = subprocess.Popen(subject.command(once, concurrency), cwd=REPO,
                                     env=subject.env(self, stage, once, port, poll), stdout=log,
                                     stderr=subprocess.STDOUT)
        proc = Proc(popen, log_path, started, started_wall, port)
        self._procs.append(proc)
        return proc

    def wait_ready(self, subject: Subject, proc: Proc, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not subject.ready(proc.log()):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{subject.name} did not start:\n{proc.log()[-2000:]}")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the subjects, then, whatever that did, delete every queue the run declared
        (on a connection of its own: the publisher's channel may be what ended the run),
        and stop the world (the fake, or the cluster's namespaces)."""
        try:
            for proc in self._procs:
                proc.stop()
        finally:
            self._delete_queues()
            for closing in (self._publisher.close, self.replies.close, self.world.close):
                try:
                    closing()
                except Exception:  # noqa: BLE001 - tidy up the rest whatever one did
                    pass

    def _delete_queues(self) -> None:
        connection = connect(self.amqp_url)
        try:
            channel = connection.channel()
            for queue in self._queues:  # and the cancel queue a handler declares beside each (Settings.cancel_queue_name)
                for name in (queue, f"{queue}.cancel"):
                    channel.queue_delete(name)
        finally:
            connection.close()
