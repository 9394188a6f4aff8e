"""What a Job profile means to a local process: ``resources.limits`` as resource limits.

A pod's limits are a cgroup's; a local process gets the nearest ``setrlimit`` has:

- ``limits.cpu`` (cores) becomes ``RLIMIT_CPU``, the CPU seconds the process may use: the
  cores times the seconds left before its deadline, which is all a pod with that limit can
  use before the same deadline. A pod is throttled instead of stopped; a process that uses
  more is stopped by the kernel (SIGXCPU, exit 152; SIGKILL a CPU second later if it
  catches that) and its Job fails.
- ``limits.memory`` becomes ``RLIMIT_DATA``, the process's data segment (heap and private
  mappings: what a cgroup's memory limit counts, without the page cache). An allocation past
  it fails (Python: ``MemoryError``, exit 1) where a pod would be ``OOMKilled`` (137).

The limits are set by a tiny launcher (``python -c``) that then ``exec``s the job's command,
so they hold from the first instruction; Python's ``preexec_fn`` is not safe in a
multi-threaded handler. Everything else in a profile that only a cluster can do (node
placement, tolerations, volumes, Secrets, extended resources such as GPUs, ...) is ignored
here, and ``notes`` says so at start-up.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from handler.core.profiles import Profile, quantity_value

#: Profile fields a local job honours (the handler's own bounds, and the limits above).
HONOURED = ("maxTimeoutMinutes", "allowedImages", "backoffLimit", "failFastExitCodes", "maxInFlight")
#: Run as ``python -c LAUNCHER CPU_SECONDS DATA_BYTES COMMAND...`` ("-": no such limit).
LAUNCHER = (
    "import os, resource, sys\n"
    "cpu, data = sys.argv[1], sys.argv[2]\n"
    "if cpu != '-':\n"
    "    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))\n"
    "if data != '-':\n"
    "    resource.setrlimit(resource.RLIMIT_DATA, (int(data), int(data)))\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


@dataclass(frozen=True)
class ProcessLimits:
    cpu_cores: Decimal | None = None
    memory_bytes: int | None = None

    def __bool__(self) -> bool:
        return self.cpu_cores is not None or self.memory_bytes is not None

    def cpu_seconds(self, seconds_left: float) -> int | None:
        """RLIMIT_CPU for a process with ``seconds_left`` before its deadline (at least 1)."""
        if self.cpu_cores is None:
            return None
        return max(1, math.ceil(float(self.cpu_cores) * max(0.0, seconds_left)))


def limits_of(profile: Profile) -> ProcessLimits:
    limits = ((profile.spec.get("resources") or {}).get("limits")) or {}
    cpu = quantity_value(str(limits["cpu"])) if "cpu" in limits else None
    memory = math.ceil(quantity_value(str(limits["memory"]))) if "memory" in limits else None
    return ProcessLimits(cpu, memory)


def command_with_limits(command: Sequence[str], limits: ProcessLimits, seconds_left: float) -> tuple[str, ...]:
    """``command`` run under ``limits`` (itself when there are none)."""
    if not limits:
        return tuple(command)
    cpu = limits.cpu_seconds(seconds_left)
    return (sys.executable, "-c", LAUNCHER, "-" if cpu is None else str(cpu),
            "-" if limits.memory_bytes is None else str(limits.memory_bytes), *command)


def notes(profile: Profile) -> tuple[list[str], list[str]]:
    """What of the profile a local job gets (as sentences), and the fields it ignores."""
    resources = profile.spec.get("resources") or {}
    limits = resources.get("limits") or {}
    applied = []
    if "cpu" in limits:
        applied.append(f"limits.cpu {limits['cpu']} as RLIMIT_CPU (the cores times the seconds to the deadline)")
    if "memory" in limits:
        applied.append(f"limits.memory {limits['memory']} as RLIMIT_DATA")
    ignored = [f"resources.limits.{name}" for name in limits if name not in ("cpu", "memory")]
    ignored += [f"resources.{kind}" for kind in resources if kind != "limits"]
    ignored += [name for name in profile.spec if name != "resources"]
    return applied, ignored
