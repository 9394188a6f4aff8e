"""A few lines of Kubernetes REST for tests, the same against the fake and the real API server.

Tests that compare servers (``tests/test_conformance.py``) or arrange and inspect a real
cluster (``tests/e2e``) speak plain HTTP through ``requests``, so nothing between the test
and the server (no client library's retries, no model classes) can hide a difference. A
:class:`KubeApi` is built from a kubeconfig: the fake's (no auth), kwokctl's admin one
(client certificate) or the handler's (a ServiceAccount token).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml


class ApiError(AssertionError):
    """The server answered with an error Status."""

    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {"message": body}
        super().__init__(f"{status}: {self.body.get('reason', '')} {self.body.get('message', '')}")

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


def _resolve(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    return str(path if Path(path).is_absolute() else base / path)


class KubeApi:
    def __init__(self, server: str, *, token: str | None = None, ca: str | None = None,
                 cert: tuple[str, str] | None = None) -> None:
        self.server = server.rstrip("/")
        self.session = requests.Session()
        # Given on every call: a session's own `verify` loses to REQUESTS_CA_BUNDLE.
        self.verify: str | bool = ca or False
        if cert:
            self.session.cert = cert
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> KubeApi:
        path = Path(path)
        config = yaml.safe_load(path.read_text())
        context_name = config.get("current-context") or config["contexts"][0]["name"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next((u.get("user") or {} for u in config.get("users", []) if u["name"] == context.get("user")), {})
        cert = None
        if user.get("client-certificate"):
            cert = (_resolve(user["client-certificate"], path.parent), _resolve(user["client-key"], path.parent))
        return cls(cluster["server"], token=user.get("token"),
                   ca=_resolve(cluster.get("certificate-authority"), path.parent), cert=cert)  # type: ignore[arg-type]

    # -- verbs -----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: Any = None, content_type: str = "application/json",
                params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        data = None if body is None else (body if isinstance(body, str | bytes) else json.dumps(body))
        response = self.session.request(method, self.server + path, data=data, params=params, timeout=timeout,
                                        headers={"Content-Type": content_type}, verify=self.verify)
        if response.status_code >= 400:
            try:
                raise ApiError(response.status_code, response.json())
            except ValueError:
                raise ApiError(response.status_code, response.text) from None
        if "json" in response.headers.get("Content-Type", ""):
            return response.json()
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("POST", path, body=body, params=params or None)

    def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("DELETE", path, body=body, params=params or None)

    def json_patch(self, path: str, operations: list[dict[str, Any]]) -> Any:
        return self.request("PATCH", path, body=operations, content_type="application/json-patch+json")

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def watch(self, path: str, timeout: float = 30, **params: Any) -> Iterator[dict[str, Any]]:
        """The events of one watch request, as the server sends them (ERROR events included)."""
        params = {"watch": "true", "timeoutSeconds": int(timeout), **params}
        with self.session.get(self.server + path, params=params, stream=True, timeout=timeout + 10,
                              verify=self.verify) as response:
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.json())
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)

    def follow(self, path: str, stop: threading.Event,
               on_error: Callable[[Exception], None] = lambda exc: None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every object under ``path`` as ``("LISTED", object)``, then each change as ``(type,
        object)`` (bookmarks left out), until ``stop`` is set. A watch that ends resumes from the
        last version seen; an ERROR event (410) or a failure (``on_error`` is told: the API
        server may be down on purpose) lists again."""
        version = ""
        while not stop.is_set():
            try:
                if not version:
                    listed = self.get(path)
                    for item in listed["items"]:
                        yield "LISTED", item
                    version = listed["metadata"]["resourceVersion"]
                for event in self.watch(path, timeout=5, resourceVersion=version, allowWatchBookmarks="true"):
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        yield event["type"], event["object"]
            except Exception as exc:  # noqa: BLE001 - a dropped watch, a server down: list again
                on_error(exc)
                version = ""
                time.sleep(0.5)

    # -- paths -------------------------------------------------------------------------------

    @staticmethod
    def jobs(namespace: str, name: str = "") -> str:
        return f"/apis/batch/v1/namespaces/{namespace}/jobs" + (f"/{name}" if name else "")

    @staticmethod
    def pods(namespace: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{namespace}/pods" + (f"/{name}" if name else "")

    @staticmethod
    def events(namespace: str) -> str:
        return f"/api/v1/namespaces/{namespace}/events"

    def list_items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.get(path, **params)["items"])

    def create_namespace(self, name: str, enforce: str | None = "restricted") -> None:
        """Create a namespace (Pod Security ``enforce`` at that level, or none) and wait until
        it has the default ServiceAccount pods need, which the controller-manager creates."""
        labels = {"pod-security.kubernetes.io/enforce": enforce,
                  "pod-security.kubernetes.io/enforce-version": "latest"} if enforce else {}
        self.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": name, "labels": labels}})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                self.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
                return
            except ApiError:
                time.sleep(0.1)
        raise AssertionError(f"no default ServiceAccount in {name} after 90 s")

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace, releasing its Jobs' finalizers first (a Job still held would
        keep it terminating); one already gone is fine."""
        try:
            for job in self.list_items(self.jobs(name)):
                if job["metadata"].get("finalizers"):
                    self.merge_patch(self.jobs(name, job["metadata"]["name"]), {"metadata": {"finalizers": None}})
            self.delete(f"/api/v1/namespaces/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
