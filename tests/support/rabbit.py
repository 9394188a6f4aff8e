"""The shared broker in the tests: queue names, what is left of them, and broker-side
faults, through ``rabbitmqctl`` (the shared broker is never stopped).

Every queue a test declares is named by ``fresh_queue``: it starts with this session's
prefix, so the session's last check (``tests/conftest.py``) finds any that a test left
behind, whatever other test runs share the broker.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

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
    """Force-close, from the broker's side, the AMQP connections of the handlers this test
    process runs: its own and its children's (the broker is shared: another checkout's tests,
    or a demo, keep theirs)."""
    ports = _own_client_ports()
    listed = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "peer_port", "client_properties"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    pids = [fields[0] for fields in (line.split("\t") for line in listed.splitlines())
            if len(fields) > 2 and "mstc-cloud-worker" in fields[2] and fields[1].isdigit() and int(fields[1]) in ports]
    assert pids, listed
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "test: broker-side close"],
                       capture_output=True, timeout=60, check=True)


def _own_client_ports() -> set[int]:
    """The local TCP ports of the sockets this process and its descendants hold (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family = {os.getpid()}
    while grown := {pid for pid, parent in parents.items() if parent in family} - family:
        family |= grown
    inodes = set()
    for pid in family:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def delete_queues(amqp_url: str, *queues: str) -> None:
    """Delete ``queues`` and, for each, the cancel queue a handler declares beside it
    (``<queue>.cancel``, ``Settings.cancel_queue_name``); a queue already gone is fine."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for queue in queues:
        for name in (queue, f"{queue}.cancel"):
            channel.queue_delete(name)
    connection.close()
