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
    # Pods the Job controller deletes (activeDeadlineSeconds, a FailJob rule,
    # suspension) stay, terminated and with their deletionTimestamp, this long
    # before the kubelet's final delete removes them, so their log can still be
    # read right after the Job reports its failure. (Real: the brief hold of the
    # controller's batch.kubernetes.io/job-tracking finalizer.)
    deadline_grace: float = 1.0
    # A deleted running pod -> its containers stopped (SIGTERM: exit 143). The
    # real kubelet waits for the process, up to terminationGracePeriodSeconds
    # (30 s by default); the pod object keeps its deletionTimestamp meanwhile.
    pod_termination_grace: float = 0.05
    # How long one second of ttlSecondsAfterFinished lasts (1.0: real seconds),
    # so a test can use a realistic TTL and still finish quickly.
    ttl_scale: float = 1.0
