"""Static discovery documents: /version, /api, /apis and the two group versions.

Just enough for clients that probe the server (``kubectl version``, the
client's VersionApi, discovery caches) to see a plausible 1.33 cluster serving
batch/v1 jobs and core/v1 pods and events.
"""

VERSION = {
    "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "fakekube",
    "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
    "compiler": "gc", "platform": "linux/amd64",
}


def _resource(name: str, kind: str, verbs: list[str], namespaced: bool = True) -> dict:
    return {"name": name, "singularName": "" if "/" in name else kind.lower(), "namespaced": namespaced,
            "kind": kind, "verbs": verbs}


_GROUP = {"name": "batch", "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
          "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"}}

DOCUMENTS = {
    "/version": VERSION,
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _resource("events", "Event", ["get", "list", "watch"]),
        _resource("pods", "Pod", ["delete", "get", "list", "patch", "update", "watch"]),
        _resource("pods/eviction", "Eviction", ["create"]),
        _resource("pods/log", "Pod", ["get"]),
        _resource("pods/status", "Pod", ["get"]),
    ]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_GROUP]},
    "/apis/batch": {"kind": "APIGroup", "apiVersion": "v1", **_GROUP},
    "/apis/batch/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "batch/v1", "resources": [
        _resource("jobs", "Job", ["create", "delete", "get", "list", "patch", "update", "watch"]),
        _resource("jobs/status", "Job", ["get"]),
    ]},
}
