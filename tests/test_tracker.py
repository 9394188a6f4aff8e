"""The shared watch cache, against a scripted watch source: resume, re-list on 410,
skip the unknown."""

import threading
import time

from handler.core.errors import ResourceGone, Transient
from handler.core.retry import Backoff
from handler.service.metrics import Metrics
from handler.service.tracker import JobTracker


def job(name, version, **status):
    return {"metadata": {"name": name, "resourceVersion": str(version)}, "status": status}


def pod(name, job_name, version):
    return {"metadata": {"name": name, "resourceVersion": str(version), "labels": {"job-name": job_name}}}


class ScriptedSource:
    """Each watch call plays the next script entry: a list of events, or an exception."""

    def __init__(self, jobs, scripts, listed_version="10"):
        self.jobs, self.scripts, self.listed_version = jobs, scripts, listed_version
        self.watch_versions, self.lists = [], 0
        self.done = threading.Event()

    def list(self, kind, selector, transform=None):
        self.lists += 1
        items = list(self.jobs) if kind == "jobs" else []
        kept = [transform(i) for i in items] if transform else items
        return [i for i in kept if i is not None], self.listed_version

    def watch(self, kind, selector, version, stopper):
        if kind == "pods":
            self.done.wait(5)
            return
        self.watch_versions.append(version)
        if not self.scripts:
            self.done.set()
            self.done.wait(5)
            return
        step = self.scripts.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step


def run(source):
    tracker = JobTracker(source, "x=y", Backoff(base=0.001, cap=0.01))
    tracker.start()
    assert source.done.wait(5)
    time.sleep(0.05)
    tracker.stop()
    return tracker


def test_a_dropped_stream_resumes_from_the_last_version_seen():
    source = ScriptedSource([], [[{"type": "ADDED", "object": job("a", 11)}], Transient("cut"), []])
    tracker = run(source)
    assert source.watch_versions[:3] == ["10", "11", "11"]
    assert tracker.snapshot("a").job is not None


def test_410_gone_re_lists_and_watches_from_the_new_list():
    source = ScriptedSource([job("a", 5, active=1)], [ResourceGone("expired")], listed_version="20")
    tracker = run(source)
    assert source.lists >= 3  # jobs + pods at start, then jobs again after 410
    assert source.watch_versions[-1] == "20"
    assert tracker.snapshot("a").job["status"] == {"active": 1}


def test_deleted_jobs_leave_the_cache_but_are_remembered_as_seen():
    source = ScriptedSource([job("a", 5)], [[{"type": "DELETED", "object": job("a", 12)}]])
    snap = run(source).snapshot("a")
    assert snap.job is None and snap.seen


def test_unknown_event_types_are_skipped_and_bookmarks_only_move_the_version():
    source = ScriptedSource([], [[{"type": "WEIRD", "object": job("x", 11)},
                                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}], []])
    tracker = run(source)
    assert tracker.snapshot("x").job is None
    assert source.watch_versions[1] == "15"


def test_pods_are_grouped_by_their_job_name_label():
    source = ScriptedSource([], [])
    tracker = JobTracker(source, "x=y")
    tracker._apply("pods", {"type": "ADDED", "object": pod("a-1", "a", 3)})
    tracker._apply("pods", {"type": "ADDED", "object": pod("b-1", "b", 4)})
    assert [p["metadata"]["name"] for p in tracker.snapshot("a").pods] == ["a-1"]


def test_a_pod_that_is_deleted_leaves_its_jobs_snapshot():
    tracker = JobTracker(ScriptedSource([], []), "x=y")
    tracker._apply("pods", {"type": "ADDED", "object": pod("a-1", "a", 3)})
    tracker._apply("pods", {"type": "DELETED", "object": pod("a-1", "a", 4)})
    assert tracker.snapshot("a").pods == []


def waited(tracker, *args):
    started = time.monotonic()
    tracker.wait(*args)
    return time.monotonic() - started


def test_a_change_after_the_snapshot_ends_the_wait_at_once():
    tracker = JobTracker(ScriptedSource([], []), "x=y")
    snap = tracker.snapshot("a")
    tracker._apply("jobs", {"type": "ADDED", "object": job("a", 3)})
    assert waited(tracker, 5, "a", snap.version) < 0.5
    assert tracker.snapshot("a").version != snap.version


def test_a_stop_flag_set_and_woken_before_the_wait_began_still_ends_it():
    # The lost wake-up the followers' long safety-net wait (MAX_WAIT) would otherwise turn
    # into a stall: the flag is set and ``wake`` called between the follower's look at the
    # flag and its wait. Were the flag not read under the tracker's lock, this would block
    # for the hour (and the test's timeout would fail it).
    tracker = JobTracker(ScriptedSource([], []), "x=y")
    tracker._apply("jobs", {"type": "ADDED", "object": job("a", 3)})
    snap = tracker.snapshot("a")
    stop = threading.Event()
    stop.set()
    tracker.wake()
    tracker.wait(3600, "a", snap.version, stop)
    assert not tracker._waiters  # returned without waiting


def test_a_wait_for_one_job_is_woken_by_its_pods_but_not_by_other_jobs():
    tracker = JobTracker(ScriptedSource([], []), "x=y")
    tracker._apply("jobs", {"type": "ADDED", "object": job("a", 3)})
    snap = tracker.snapshot("a")
    other = threading.Timer(0.05, tracker._apply, ("jobs", {"type": "ADDED", "object": job("b", 4)}))
    mine = threading.Timer(0.3, tracker._apply, ("pods", {"type": "ADDED", "object": pod("a-1", "a", 5)}))
    other.start()
    mine.start()
    assert 0.25 < waited(tracker, 5, "a", snap.version) < 2
    other.join()
    mine.join()


def test_a_jobs_failed_create_events_reach_its_snapshot():
    tracker = JobTracker(ScriptedSource([], []), "x=y", events_selector="reason=FailedCreate")
    event = {"metadata": {"name": "a.17", "resourceVersion": "5"}, "reason": "FailedCreate",
             "involvedObject": {"kind": "Job", "name": "a"}, "message": "exceeded quota"}
    snap = tracker.snapshot("a")
    tracker._apply("events", {"type": "ADDED", "object": event})
    assert [e["message"] for e in tracker.snapshot("a").events] == ["exceeded quota"]
    assert tracker.snapshot("a").version != snap.version  # and it wakes the Job's follower
    tracker._apply("events", {"type": "DELETED", "object": event})
    assert tracker.snapshot("a").events == []


class SilentSource(ScriptedSource):
    """A jobs watch that connects, then sends nothing at all until stopped (a stalled proxy,
    or a quiet namespace on a real API server, which sends no bookmark then). With
    ``missed``, each watch resumed after the first replays that many changes at once: what
    a stalled stream never delivered."""

    def __init__(self, missed: int = 0):
        super().__init__([], [])
        self.opened = 0
        self.missed = missed

    def watch(self, kind, selector, version, stopper):
        if kind != "jobs":
            self.done.wait(5)
            return
        self.opened += 1
        if self.opened > 1:
            for n in range(self.missed):
                yield {"type": "MODIFIED", "object": job(f"j-{self.opened}-{n}", 100 * self.opened + n)}
        stream = threading.Event()
        stream.stop = stream.set
        stopper.append(stream)
        try:
            stream.wait(5)
        finally:
            stopper.remove(stream)


def test_a_silent_watch_is_resumed_long_before_its_read_timeout_and_a_quiet_one_is_no_stall():
    source = SilentSource()
    tracker = JobTracker(source, "x=y", Backoff(base=0.001, cap=0.01), stall_seconds=0.2)
    tracker.start()
    time.sleep(1.0)
    source.done.set()
    tracker.stop()
    assert source.opened >= 3  # resumed, again and again: one cheap watch request each time
    assert tracker.counters.stalls == 0  # nothing was missed: it was only quiet


def test_a_silent_watch_whose_resumption_replays_missed_changes_counts_as_stalled():
    source = SilentSource(missed=2)
    tracker = JobTracker(source, "x=y", Backoff(base=0.001, cap=0.01), stall_seconds=0.2)
    tracker.start()
    time.sleep(1.0)
    source.done.set()
    tracker.stop()
    assert source.opened >= 3 and tracker.counters.stalls >= 2
    assert "j-2-1" in {j["metadata"]["name"] for j in tracker.jobs()}  # what it missed is in the cache now
    metrics = Metrics()
    metrics.watch(tracker)
    assert metrics.value("cloud_worker_watch_stalls_total") == tracker.counters.stalls


def test_without_a_stall_limit_a_quiet_watch_is_left_alone():
    source = SilentSource()
    tracker = JobTracker(source, "x=y", Backoff(base=0.001, cap=0.01))
    tracker.start()
    time.sleep(0.5)
    source.done.set()
    tracker.stop()
    assert tracker.counters.stalls == 0 and source.opened == 1


def ended_pod(name, job_name, version, exit_code=0):
    obj = pod(name, job_name, version)
    obj["status"] = {"containerStatuses": [{"name": "job", "state": {"terminated": {"exitCode": exit_code}}}]}
    return obj


def test_objects_are_trimmed_on_the_way_into_the_cache():
    source = ScriptedSource([dict(job("a", 3), spec={"template": {"spec": {"containers": [{"name": "job"}]}}},
                                  managedFields=[{"manager": "kube-controller-manager"}])], [])
    tracker = JobTracker(source, "x=y")
    tracker._relist("jobs")
    whole = dict(pod("a-1", "a", 4), spec={"volumes": [{"name": "kube-api-access"}]})
    tracker._apply("pods", {"type": "ADDED", "object": whole})
    snap = tracker.snapshot("a")
    assert "managedFields" not in snap.job and "spec" not in snap.pods[0]
    assert snap.pods[0]["metadata"]["labels"] == {"job-name": "a"}


def test_a_job_that_leaves_the_watch_takes_its_finished_pods_with_it_and_is_known_as_gone():
    tracker = JobTracker(ScriptedSource([], []), "x=y")
    tracker._apply("jobs", {"type": "ADDED", "object": job("a", 3)})
    tracker._apply("pods", {"type": "MODIFIED", "object": ended_pod("a-1", "a", 4)})
    assert len(tracker.snapshot("a").pods) == 1
    tracker._apply("jobs", {"type": "DELETED", "object": job("a", 5)})  # replied: out of the selection
    snap = tracker.snapshot("a")
    assert snap.job is None and snap.seen and snap.last is not None and snap.pods == []
    assert tracker.sizes()["pods"] == 0


def test_finished_pods_of_jobs_that_left_are_not_kept_but_those_of_jobs_not_seen_yet_are():
    tracker = JobTracker(ScriptedSource([], []), "x=y")
    tracker._apply("jobs", {"type": "ADDED", "object": job("old", 1)})
    tracker._apply("jobs", {"type": "DELETED", "object": job("old", 2)})  # replied: left the selection
    tracker._apply("pods", {"type": "MODIFIED", "object": ended_pod("old-1", "old", 3)})
    # The Jobs' stream may lag behind the pods': a Job not seen yet may still come.
    tracker._apply("pods", {"type": "MODIFIED", "object": ended_pod("new-1", "new", 4)})
    tracker._apply("jobs", {"type": "ADDED", "object": job("new", 5)})
    assert tracker.snapshot("old").pods == [] and len(tracker.snapshot("new").pods) == 1


class ListedPodsSource(ScriptedSource):
    def list(self, kind, selector, transform=None):
        if kind != "pods":
            return super().list(kind, selector, transform)
        pods = [ended_pod("waiting-1", "waiting", 3), ended_pod("replied-1", "replied", 4),
                pod("replied-2", "replied", 5)]
        return [p for p in map(transform, pods) if p is not None], "10"


def test_a_pods_list_keeps_the_pods_of_cached_jobs_and_those_still_running():
    tracker = JobTracker(ListedPodsSource([job("waiting", 2)], []), "x=y")
    tracker._relist("jobs")
    tracker._relist("pods")
    assert [p["metadata"]["name"] for p in tracker.snapshot("waiting").pods] == ["waiting-1"]
    assert [p["metadata"]["name"] for p in tracker.snapshot("replied").pods] == ["replied-2"]


def test_what_is_kept_of_jobs_no_longer_cached_is_bounded():
    from handler.service.tracker import GONE_KEEP

    tracker = JobTracker(ScriptedSource([], []), "x=y")
    for i in range(GONE_KEEP + 500):
        tracker._apply("jobs", {"type": "ADDED", "object": job(f"j{i}", 2 * i)})
        tracker._apply("jobs", {"type": "DELETED", "object": job(f"j{i}", 2 * i + 1)})
    assert tracker.sizes() == {"jobs": 0, "pods": 0, "events": 0, "gone": GONE_KEEP, "remembered": 0}
    assert not tracker._changed and not tracker._waiters
    assert tracker.snapshot(f"j{GONE_KEEP + 499}").seen


def test_a_remembered_job_is_in_its_snapshots_until_the_watch_brings_it():
    tracker = JobTracker(ScriptedSource([], []), "x=y")
    tracker.remember(job("a", 3, succeeded=1))
    assert tracker.snapshot("a").job is not None
    tracker._apply("jobs", {"type": "ADDED", "object": job("a", 4)})
    assert tracker.sizes()["remembered"] == 0 and tracker.snapshot("a").job is not None


class SlowPodsSource(ScriptedSource):
    """Its pods LIST takes until ``release`` is set (a namespace full of finished pods)."""

    def __init__(self):
        super().__init__([job("a", 3)], [])
        self.release = threading.Event()

    def list(self, kind, selector, transform=None):
        if kind == "pods":
            self.release.wait(5)
        return super().list(kind, selector, transform)


def test_start_up_does_not_wait_for_the_pods_list_but_a_snapshot_of_pods_does():
    source = SlowPodsSource()
    tracker = JobTracker(source, "x=y")
    started = time.monotonic()
    tracker.start()
    try:
        assert time.monotonic() - started < 0.5
        assert tracker.snapshot("a", pods=False).job is not None
        threading.Timer(0.3, source.release.set).start()
        started = time.monotonic()
        tracker.snapshot("a")
        assert 0.2 < time.monotonic() - started < 3
    finally:
        source.release.set()
        source.done.set()
        tracker.stop()
