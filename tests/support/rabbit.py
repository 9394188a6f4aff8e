"""The shared broker in the tests: queue names, what is left of them, and broker-side
faults, through ``rabbitmqctl`` (the shared broker is never stopped).

Every queue a test declares is named by ``fresh_queue``: it starts with this session's
prefix, so the session's last check (``tests/conftest.py``) finds any that a test left
behind, whatever other test runs share the broker.
"""

from __future__ import annotations

import subprocess
import uuid

import pika

#: What starts the name of every queue this test session declares.
SESSION_PREFIX = f"test.{uuid.uuid4().hex[:6]}"


def fresh_queue(kind: str = "work") -> str:
    """A queue name of this session's own: ``test.<session>.<random>.<kind>``."""
    return f"{SESSION_PREFIX}.{uuid.uuid4().hex[:8]}.{kind}"


def queues_named(prefix: str) -> list[str] | None:
    """The broker's queues whose names start with ``prefix``; None when ``rabbitmqctl``
    cannot say (not installed, or not allowed to talk to the broker)."""
    try:
        listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    return sorted(line.strip() for line in listed.stdout.splitlines() if line.strip().startswith(prefix))


def close_handler_connections():
    """Force-close the handlers' AMQP connections from the broker side."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    pids = [line.split("\t")[0] for line in listed.splitlines() if "mstc-cloud-worker" in line]
    assert pids, listed
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "test: broker-side close"],
                       capture_output=True, timeout=60, check=True)


def delete_queues(amqp_url: str, *queues: str) -> None:
    """Delete ``queues`` and, for each, the cancel queue a handler declares beside it
    (``<queue>.cancel``, ``Settings.cancel_queue_name``); a queue already gone is fine."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for queue in queues:
        for name in (queue, f"{queue}.cancel"):
            channel.queue_delete(name)
    connection.close()
