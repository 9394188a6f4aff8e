"""A stateful fake Kubernetes API server for testing the handler over real HTTP.

``FakeKube`` serves batch/v1 Jobs, core/v1 Pods and core/v1 Events the way the
official ``kubernetes`` client expects (paths, Status errors, watch streams,
410 Gone, paginated LISTs), and simulates the cluster behind them: the Job
controller, the kubelet, the garbage collector and the TTL-after-finished
controller, with each container's behaviour chosen by its image (see
:mod:`tests.fakekube.scenarios`). What each piece models, and after which
Kubernetes documentation, is in its module's docstring.

Cluster behaviour (Kubernetes 1.31+), with defaults compatible with a plain Job:

- Deletion (:mod:`.deletion`, :mod:`.gc`): ``metadata.finalizers`` and
  ``deletionTimestamp``; Background, Foreground (``foregroundDeletion``) and
  Orphan (``orphan``, the batch/v1 default) propagation, all asynchronous as in
  a cluster; running pods are deleted gracefully (SIGTERM, exit 143).
- TTL after finished (:mod:`.ttl`): a Foreground delete ``ttlSecondsAfterFinished``
  after the Job finished.
- Job status (:mod:`.jobstatus`, :mod:`.accounting`): ``SuccessCriteriaMet`` /
  ``FailureTarget`` first, ``Complete`` / ``Failed`` once no pod runs or
  terminates; ``spec.suspend``; ``spec.podFailurePolicy`` (:mod:`.failurepolicy`);
  ``FailedCreate`` Events when admission refuses a pod (:mod:`.events`).

Knobs a test turns:

========================================================  ===================================================
``FakeKube(run_seconds, timings=Timings(...))``           pacing; ``Timings.pod_termination_grace`` (deleted
                                                          pod -> SIGTERM), ``deadline_grace`` (pods the Job
                                                          controller deletes linger), ``ttl_scale`` (one TTL
                                                          second in real seconds), backoff, start delays
``FakeKube(history_limit=N)``                             watch history (and paginated-LIST snapshots) kept
``FakeKube(bookmark_interval=S)``                         BOOKMARK every S s (default 60, as the watch cache)
                                                          on ``allowWatchBookmarks`` watches, and 2 s before
                                                          ``timeoutSeconds``; never on events
``FakeKube(sidecar=Sidecar(...))``,                       inject ``istio-proxy`` (or any :class:`Sidecar`:
``fake.inject_sidecar(Sidecar(...), namespace=None)``     ``image="scenario/sidecar:exits"`` quits with the
                                                          others, ``native=True`` as a native sidecar) into new
                                                          pods; ``inject_sidecar(None, ns)`` stops it
``fake.set_pod_quota(namespace, pods, name="pod-quota")`` a ResourceQuota on pods: creates beyond it are
                                                          ``FailedCreate`` Events, retried; None lifts it
``FakeKube(pod_security="restricted")``,                  Pod Security admission, judged on the pod's
``fake.enforce_pod_security(level, namespace=None)``      securityContext (:mod:`.podsecurity`): a refused
                                                          pod is a ``FailedCreate`` Event
``fake.disrupt_pod(ns, pod, reason=..., message=None,``   ``DisruptionTarget`` + deletion (exit 143), or
``exit_code=143)``                                        ``TerminationByKubelet``: Failed/Evicted (see
                                                          :mod:`.disruption` for the reasons)
``fake.finish(ns, job, succeeded=True, exit_code=0)``     end a ``scenario/hold`` pod now
``fake.compact()``                                        drop history: old watches and continue tokens 410
``fake.faults``                                           HTTP faults (:class:`Faults`): ``error_rate``,
                                                          ``throttle_rate``, ``latency``, ``cut_watch_after``,
                                                          ``silent_watch_after`` (a watch that goes silent),
                                                          ``gone_on_resume``, ``reject_create_status``
========================================================  ===================================================

What stays different from a real API server, and why (``tests/test_conformance.py`` runs the
same assertions against both; ``make e2e`` runs the handler on the real control plane):

- No authentication or authorization: every request is allowed. RBAC is proven on the real
  API server instead, where the e2e handler runs with the chart ServiceAccount's token
  (``tests/e2e/test_security.py``, and every other e2e test fails on a missing grant).
- No Namespace objects: Pod Security is enforced per namespace by a knob, not a label.
- ``compact()`` expires old watch versions and continue tokens at once. A real API server
  (1.34+) serves watches, and paginated LISTs from snapshots, out of its watch cache, which
  outlives an etcd compaction until it is rebuilt (after a restart, say); the real half of
  ``tests/test_conformance.py`` compacts etcd and restarts the API server to get the same 410s.
- A BOOKMARK carries the store's current version; a real one carries the last version of the
  watched resource. Both are newer than what the watcher saw, which is what a client relies on.
- Only Jobs, pods and events are served, each without the watch cache's batching; the
  timings (TTL, backoff, kubelet) are scaled down for speed (:mod:`.timings`).

Inspection bypassing HTTP: ``jobs(ns)``, ``pods(ns)``, ``events(ns, reason=None)``,
``created_jobs(ns)``, ``request_count(method, kind)``, ``on_write(listener)``.
Through HTTP, besides the usual verbs: PUT on jobs and pods, POST
``pods/{name}/eviction``, ``?container=`` on pod logs, ``limit``/``continue`` on
every LIST.
"""

from .faults import Faults
from .podadmission import Sidecar
from .scenarios import Outcome
from .server import FakeKube
from .timings import Timings

__all__ = ["FakeKube", "Faults", "Outcome", "Sidecar", "Timings"]
