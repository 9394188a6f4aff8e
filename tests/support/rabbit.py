"""Broker-side faults for the tests, through ``rabbitmqctl`` (the shared broker is never stopped)."""

from __future__ import annotations

import subprocess


def close_handler_connections():
    """Force-close the handlers' AMQP connections from the broker side."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    pids = [line.split("\t")[0] for line in listed.splitlines() if "mstc-cloud-worker" in line]
    assert pids, listed
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "test: broker-side close"],
                       capture_output=True, timeout=60, check=True)
