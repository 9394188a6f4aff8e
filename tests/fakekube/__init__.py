"""A stateful fake Kubernetes API server for testing the handler over real HTTP.

``FakeKube`` serves batch/v1 Jobs and core/v1 Pods the way the official
``kubernetes`` client expects (paths, Status errors, watch streams, 410 Gone),
and simulates the Job controller and kubelet, with pod behaviour chosen by the
container image (see :mod:`tests.fakekube.scenarios`).
"""

from .faults import Faults
from .scenarios import Outcome
from .server import FakeKube
from .timings import Timings

__all__ = ["FakeKube", "Faults", "Outcome", "Timings"]
