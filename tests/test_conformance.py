"""The fake API server and the real one agree, on what the handler relies on.

Each test runs twice, with the same requests and the same assertions: against
``tests/fakekube`` (``[fake]``, in ``make test``) and against the real control plane of
``scripts/cluster.sh`` (``[real]``, marked ``e2e``: ``make e2e``). Images differ only in name
(the fake's ``scenario/...``, kwok's ``e2e/...`` stages). A difference found here is fixed in the
fake, or written down in tests/fakekube with why it stays.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.kubeapi import ApiError, KubeApi
from tests.support.waiting import wait_until

HOLD = "conformance.mstc.io/hold"


@dataclass
class Server:
    name: str
    api: KubeApi
    images: dict[str, str]  # ok, exit-3, forever -> the server's image for it
    compact: Callable[[], None]  # make every older resourceVersion expire
    namespace: str = ""


def fake_server(fakekube) -> Server:
    return Server("fake", KubeApi(fakekube.url),
                  {"ok": "scenario/succeed:1", "exit-3": "scenario/fail:3", "forever": "scenario/hold"},
                  fakekube.compact)


def real_server(cluster) -> Server:
    def compact() -> None:
        # etcd forgets every older revision; the API server's watch cache (which serves watches
        # and, since 1.34, paginated LISTs from its own snapshots) forgets them only when it is
        # rebuilt, as after a restart.
        cluster.etcd_put(f"/conformance-filler/{uuid.uuid4().hex}", "x")
        cluster.etcd_compact(cluster.etcd_revision())
        cluster.kill("kube-apiserver")
        cluster.start()

    return Server("real", cluster.admin, {"ok": "e2e/ok:1", "exit-3": "e2e/exit-3", "forever": "e2e/forever"},
                  compact)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.e2e)])
def server(request) -> Iterator[Server]:
    namespace = f"conf-{uuid.uuid4().hex[:10]}"
    if request.param == "fake":
        server = fake_server(request.getfixturevalue("fakekube"))
        server.namespace = namespace
        yield server
        return
    from tests.e2e.conftest import create_namespace, delete_namespace

    cluster = request.getfixturevalue("cluster")
    create_namespace(cluster, namespace)
    server = real_server(cluster)
    server.namespace = namespace
    yield server
    delete_namespace(cluster, namespace)


def job(name: str, image: str, *, run_as_user: int = 1000, **spec: Any) -> dict[str, Any]:
    """A Job the restricted Pod Security level admits (unless ``run_as_user`` is 0)."""
    metadata = {"name": name, **{k: spec.pop(k) for k in ("labels", "finalizers") if k in spec}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": {
        "backoffLimit": 0, **spec,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "job", "image": image, "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                "runAsUser": run_as_user, "seccompProfile": {"type": "RuntimeDefault"}}}]}}}}


def create(server: Server, manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(server.api.post(KubeApi.jobs(server.namespace), manifest))


def read(server: Server, name: str) -> dict[str, Any] | None:
    try:
        return dict(server.api.get(KubeApi.jobs(server.namespace, name)))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def conditions(obj: dict[str, Any] | None) -> list[str]:
    return [c["type"] for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["status"] == "True"]


def finished(server: Server, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def done() -> bool:
        current = read(server, name)
        if current and {"Complete", "Failed"} & set(conditions(current)):
            found.append(current)
            return True
        return False

    wait_until(done, f"Job {name} finished", timeout=60)
    return found[0]


def pods_of(server: Server, name: str) -> list[dict[str, Any]]:
    return server.api.list_items(KubeApi.pods(server.namespace), labelSelector=f"job-name={name}")


# -- deletion ------------------------------------------------------------------------------------------


def test_the_ttl_controller_deletes_in_the_foreground_and_a_finalizer_holds_the_job_until_released(server):
    create(server, job("ttl", server.images["ok"], ttlSecondsAfterFinished=1, finalizers=[HOLD]))
    wait_until(lambda: (read(server, "ttl") or {}).get("metadata", {}).get("deletionTimestamp"),
               "the TTL controller deleted the Job", timeout=60)
    wait_until(lambda: not pods_of(server, "ttl"), "the pods went first", timeout=60)
    # The garbage collector lifts foregroundDeletion once the pods are gone; our finalizer stays.
    wait_until(lambda: (read(server, "ttl") or {})["metadata"].get("finalizers") == [HOLD],
               "only our finalizer holds the Job", timeout=60)
    held = read(server, "ttl")
    assert held is not None and "Complete" in conditions(held)
    finalizers = held["metadata"]["finalizers"]
    server.api.json_patch(KubeApi.jobs(server.namespace, "ttl"), [
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != HOLD]}])
    wait_until(lambda: read(server, "ttl") is None, "the released Job is gone", timeout=60)


def test_a_failed_json_patch_test_changes_nothing_and_is_refused_as_invalid(server):
    create(server, job("patched", server.images["forever"], suspend=True, labels={"a": "1"}))
    with pytest.raises(ApiError) as refused:
        server.api.json_patch(KubeApi.jobs(server.namespace, "patched"), [
            {"op": "test", "path": "/metadata/labels/a", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "3"}])
    assert (refused.value.status, refused.value.reason) == (422, "Invalid"), refused.value.body
    assert refused.value.message == "the server rejected our request due to an error in our request"
    assert (read(server, "patched") or {})["metadata"]["labels"] == {"a": "1"}


# -- the Job controller's conditions ----------------------------------------------------------------


def test_success_criteria_met_comes_before_complete_and_failure_target_before_failed(server):
    create(server, job("good", server.images["ok"]))
    create(server, job("bad", server.images["exit-3"]))
    assert conditions(finished(server, "good")) == ["SuccessCriteriaMet", "Complete"]
    bad = finished(server, "bad")
    assert conditions(bad) == ["FailureTarget", "Failed"]
    assert [c["reason"] for c in bad["status"]["conditions"]] == ["BackoffLimitExceeded", "BackoffLimitExceeded"]


# -- reading: selectors, pages, expired versions ---------------------------------------------------------


def test_a_not_label_selector_lists_the_objects_without_that_label(server):
    create(server, job("marked", server.images["forever"], suspend=True, labels={"replied": "yes", "app": "x"}))
    create(server, job("unmarked", server.images["forever"], suspend=True, labels={"app": "x"}))
    listed = server.api.list_items(KubeApi.jobs(server.namespace), labelSelector="app=x,!replied")
    assert [j["metadata"]["name"] for j in listed] == ["unmarked"]


def test_a_list_in_pages_follows_continue_tokens_through_every_object(server):
    names = [f"page-{i}" for i in range(5)]
    for name in names:
        create(server, job(name, server.images["forever"], suspend=True))
    first = server.api.get(KubeApi.jobs(server.namespace), limit=2)
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    assert first["metadata"]["remainingItemCount"] == 3
    seen, page = [j["metadata"]["name"] for j in first["items"]], first
    while page["metadata"].get("continue"):
        page = server.api.get(KubeApi.jobs(server.namespace), limit=2, **{"continue": page["metadata"]["continue"]})
        seen += [j["metadata"]["name"] for j in page["items"]]
    assert seen == names


def test_a_continue_token_from_before_a_compaction_is_410_expired(server):
    for i in range(3):
        create(server, job(f"old-{i}", server.images["forever"], suspend=True))
    token = server.api.get(KubeApi.jobs(server.namespace), limit=1)["metadata"]["continue"]
    create(server, job("newer", server.images["forever"], suspend=True))
    server.compact()
    with pytest.raises(ApiError) as expired:
        server.api.get(KubeApi.jobs(server.namespace), limit=1, **{"continue": token})
    assert (expired.value.status, expired.value.reason) == (410, "Expired"), expired.value.body


def test_a_watch_from_a_resource_version_older_than_history_gets_one_410_error_event(server):
    server.compact()
    events = list(server.api.watch(KubeApi.jobs(server.namespace), timeout=5, resourceVersion="1"))
    assert [e["type"] for e in events] == ["ERROR"], events
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")


def test_a_watch_gets_a_bookmark_only_once_its_resource_moved_on_and_a_watch_on_events_never(server):
    """Bookmarks come from the watch cache: at most every minute and from 2 s before the watch's
    timeout, only with a resourceVersion newer than the watcher's (a Job changed anywhere, even
    outside its selector); events (not cached) never get one. (That a resource nobody touches
    gets none cannot be shown on a shared cluster: tests/test_fakekube.py shows it on the fake.)"""
    path = KubeApi.jobs(server.namespace)
    version = server.api.get(path)["metadata"]["resourceVersion"]
    started, arrivals = time.monotonic(), []

    def watch() -> None:
        for event in server.api.watch(path, timeout=6, resourceVersion=version, allowWatchBookmarks="true",
                                      labelSelector="watched=yes"):
            arrivals.append((event["type"], round(time.monotonic() - started, 1)))

    # The watch first, then the change: a watch that starts after the watch cache has seen the
    # change begins at the cache's version, and the resource has not moved on for it.
    watching = threading.Thread(target=watch, daemon=True)
    watching.start()
    time.sleep(1)
    create(server, job("unwatched", server.images["forever"], suspend=True))  # outside the selector
    watching.join(20)
    assert not watching.is_alive()
    assert [kind for kind, _ in arrivals][:1] == ["BOOKMARK"] and {k for k, _ in arrivals} == {"BOOKMARK"}, arrivals
    assert 3 <= arrivals[0][1] <= 6, arrivals  # not before 2 s before the timeout
    version = server.api.get(KubeApi.events(server.namespace))["metadata"]["resourceVersion"]
    events = list(server.api.watch(KubeApi.events(server.namespace), timeout=4, resourceVersion=version,
                                   allowWatchBookmarks="true"))
    assert [e["type"] for e in events if e["type"] == "BOOKMARK"] == [], events


# -- admission and logs -----------------------------------------------------------------------------------


def test_a_pod_refused_by_pod_security_is_a_failed_create_event_of_the_job_in_the_api_servers_words(server):
    create(server, job("root", server.images["ok"], run_as_user=0))

    def refused() -> list[dict[str, Any]]:
        return [e for e in server.api.list_items(KubeApi.events(server.namespace))
                if e["reason"] == "FailedCreate" and e["involvedObject"]["name"] == "root"]

    wait_until(refused, "a FailedCreate event", timeout=60)
    event = refused()[0]
    assert (event["type"], event["involvedObject"]["kind"]) == ("Warning", "Job")
    assert re.fullmatch(r'Error creating: pods "root-[a-z0-9]{5}" is forbidden: violates PodSecurity '
                        r'"restricted:latest": runAsUser=0 \(container "job" must not set runAsUser=0\)',
                        event["message"]), event["message"]
    assert not pods_of(server, "root")


def test_the_log_of_a_finished_pod_is_read_whole_or_by_its_last_lines(server):
    create(server, job("logged", server.images["ok"]))
    finished(server, "logged")
    pod = pods_of(server, "logged")[0]["metadata"]["name"]
    path = KubeApi.pods(server.namespace, pod) + "/log"
    whole = str(server.api.get(path, container="job"))
    last = str(server.api.get(path, container="job", tailLines=1))
    assert len(whole.splitlines()) > 1 and whole.endswith("\n")
    assert last == whole.splitlines(keepends=True)[-1]
    with pytest.raises(ApiError) as missing:
        server.api.get(path, container="sidecar")
    assert missing.value.status == 400, missing.value.body
