"""How long the simulated cluster takes for each step, in seconds.

Real clusters take seconds to minutes; the fake shrinks every delay so a test
of the full lifecycle takes well under a second, while keeping the order of
events a real cluster produces. Frozen and passed in: tests that need other
pacing build their own.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    # Job created -> its first pod created (the controller's sync latency).
    controller_delay: float = 0.005
    # Pod created -> container running or stuck waiting (scheduling + kubelet).
    start_delay: float = 0.01
    # How long ``scenario/fail`` and ``scenario/oom`` containers run.
    brief_run: float = 0.02
    # First retry delay after a failed pod; doubles per failure up to the cap.
    # (Real: 10 s doubling to 6 min, far too slow for tests.)
    backoff_base: float = 0.01
    backoff_cap: float = 0.2
    # ErrImagePull -> ImagePullBackOff.
    pull_backoff: float = 0.2
    # Pods killed for activeDeadlineSeconds stay (terminated, with a
    # deletionTimestamp) this long before they are removed, so their log can
    # still be read right after the Job reports DeadlineExceeded.
    deadline_grace: float = 1.0
