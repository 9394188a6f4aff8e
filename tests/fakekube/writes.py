"""The write verbs on one object: DELETE, PATCH, PUT, and a pod's eviction.

HTTP-shaped but store-facing: each function takes the parsed request and
returns ``(body, code, headers)`` or raises :class:`ApiError`, worded as the
real API server words it. What deletion means (finalizers, grace periods,
propagation) is :mod:`tests.fakekube.deletion`'s business:

- DELETE answers the Status ``Success`` once an object is gone (a pod: the pod
  as it was), or the object itself, marked with its ``deletionTimestamp``,
  when finalizers or a grace period keep it (202 when ``orphanDependents:
  false`` asked for a cascade). Without a policy, batch/v1 Jobs orphan their
  pods and say so in a ``Warning`` header.
- PATCH (merge, strategic merge, JSON patch) and PUT (a ``resourceVersion``
  that no longer matches is 409) keep the system fields and the status,
  refuse immutable changes (:func:`admission.check_update`) and follow the
  finalizer rules: emptying the finalizers of an object being deleted removes
  it; adding one is 422.
- POST ``pods/{name}/eviction`` (policy/v1 Eviction, as ``kubectl drain``):
  the pod gets the ``DisruptionTarget`` condition (``EvictionByEvictionAPI``)
  and is deleted gracefully; 201 with a Success Status. No
  PodDisruptionBudget is modelled, so an eviction is never refused with 429.
"""

from . import deletion, patch
from .admission import check_update
from .kubelet import add_condition, disruption_condition, is_terminal
from .objects import JOBS, PODS, Resource
from .status import ApiError, bad_request, not_found, success_body, unsupported_media_type
from .store import Store

ORPHAN_WARNING = ('299 - "child pods are preserved by default when jobs are deleted; set '
                  'propagationPolicy=Background to remove them or set propagationPolicy=Orphan to '
                  'suppress this warning"')
SYSTEM_FIELDS = ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation",
                 "deletionTimestamp", "deletionGracePeriodSeconds")
Reply = tuple[dict, int, dict]


def _flag(value) -> bool | None:
    return None if value is None else str(value).lower() == "true"


def delete(store: Store, resource: Resource, namespace: str, name: str, options: dict, query: dict) -> Reply:
    policy = query.get("propagationPolicy") or options.get("propagationPolicy")
    orphan = _flag(options.get("orphanDependents", query.get("orphanDependents")))
    if policy is None and orphan is not None:
        policy = "Orphan" if orphan else "Background"
    headers = {"Warning": ORPHAN_WARNING} if policy is None and resource is JOBS else {}
    policy = policy or ("Orphan" if resource is JOBS else "Background")
    if policy not in ("Background", "Foreground", "Orphan"):
        raise bad_request(f'propagationPolicy: Unsupported value: "{policy}"')
    grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
    try:
        grace = None if grace in (None, "") else int(grace)
    except ValueError:
        raise bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
    uid = (options.get("preconditions") or {}).get("uid")
    current = store.get(resource, namespace, name)
    if current is None:
        raise not_found(resource, name)
    if uid is not None and uid != current["metadata"]["uid"]:
        raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                       f"UID in object meta: {current['metadata']['uid']}")
    result = deletion.delete(store, resource, namespace, name, policy, grace, uid=current["metadata"]["uid"])
    if result is None:
        raise not_found(resource, name)
    obj, gone = result
    if not gone:
        return obj, 202 if orphan is False else 200, headers
    if resource is PODS:
        return obj, 200, headers
    return success_body(resource, name, obj["metadata"]["uid"]), 200, headers


def _merged(resource: Resource, name: str, old: dict, result: dict) -> dict:
    """``result`` with the system fields and status of ``old``; raises 409 on a stale version."""
    meta, new_meta = old["metadata"], result.get("metadata") or {}
    if new_meta.get("resourceVersion", meta["resourceVersion"]) != meta["resourceVersion"]:
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource.qualified} "{name}": the '
                       'object has been modified; please apply your changes to the latest version and try again')
    for key in SYSTEM_FIELDS:
        if key in meta:
            new_meta[key] = meta[key]
        else:
            new_meta.pop(key, None)
    result.update(apiVersion=old["apiVersion"], kind=old["kind"], metadata=new_meta, status=old.get("status", {}))
    check_update(resource, old, result)
    if "generation" in meta and result.get("spec") != old.get("spec"):
        new_meta["generation"] = meta["generation"] + 1
    return result


def _write(store: Store, resource: Resource, namespace: str, name: str, build) -> dict:
    def replace(obj: dict) -> None:
        result = _merged(resource, name, obj, build(obj))
        obj.clear()
        obj.update(result)

    updated = deletion.update(store, resource, namespace, name, replace)
    if updated is None:
        raise not_found(resource, name)
    return updated


def patch_object(store: Store, resource: Resource, namespace: str, name: str, content_type: str,
                 body: object) -> Reply:
    if content_type not in patch.CONTENT_TYPES:
        raise unsupported_media_type(content_type)

    def patched(obj: dict) -> dict:
        try:
            return patch.apply(content_type, obj, body)
        except patch.TestFailed as exc:
            # The real API server says no more than this of a failed `test` (checked against it in
            # tests/test_conformance.py).
            raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request") from exc
        except (patch.PatchError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in "
                                           f"our request: {exc}") from exc

    return _write(store, resource, namespace, name, patched), 200, {}


def replace_object(store: Store, resource: Resource, namespace: str, name: str, body: object) -> Reply:
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object")
    given = (body.get("metadata") or {}).get("name")
    if given != name:
        raise bad_request(f"the name of the object ({given}) does not match the name on the URL ({name})")
    if (body.get("metadata") or {}).get("namespace") not in (None, "", namespace):
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")

    def replaced(obj: dict) -> dict:
        result = patch.merge_patch({}, body)
        result.setdefault("metadata", {})
        return result

    return _write(store, resource, namespace, name, replaced), 200, {}


def evict(store: Store, namespace: str, name: str, body: object) -> Reply:
    options = (body or {}).get("deleteOptions") or {} if isinstance(body, dict) else {}
    with store.lock:
        pod = store.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        if not is_terminal(pod):
            condition = disruption_condition("EvictionByEvictionAPI", "Eviction API: evicting")
            store.update(PODS, namespace, name, lambda p: add_condition(p, condition), uid=pod["metadata"]["uid"])
        deletion.delete(store, PODS, namespace, name, "Background", options.get("gracePeriodSeconds"),
                        uid=pod["metadata"]["uid"])
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201, {}
