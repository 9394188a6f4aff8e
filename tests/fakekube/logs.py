"""Rendering a pod's log the way ``GET .../pods/{name}/log`` answers.

Pure: the kubelet records lines per container, this module picks the container
and applies the query (tailLines, limitBytes, timestamps). The container rules
are the API server's (``pkg/registry/core/pod/strategy.go`` ``LogLocation``):
without ``?container=`` a pod with one regular container gets that one's log,
and one with several is answered 400 "a container name must be specified for
pod X, choose one of: [a b] or one of the init containers: [c]"; an unknown
name is 400 "container x is not valid for pod X". The kubelet then refuses a
container that has not started (400, "is waiting to start").
"""

from .status import ApiError, bad_request


def check_container(pod: dict, container: str | None) -> str:
    """The container whose log is asked for; raises 400 like the real server."""
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    init_names = [c.get("name") for c in spec.get("initContainers") or []]
    if not container:
        if len(names) != 1:
            message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
            if init_names:
                message += f" or one of the init containers: [{' '.join(init_names)}]"
            raise bad_request(message)
        container = names[0]
    if container not in names + init_names:
        raise bad_request(f"container {container} is not valid for pod {name}")
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    reason = "ContainerCreating"
    for entry in statuses:
        if entry.get("name") == container:
            state = entry.get("state") or {}
            if "waiting" not in state:
                return container
            reason = state["waiting"].get("reason", reason)
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        reason = "trying and failing to pull image"
    raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}')


def render(lines: list[tuple[str, str]], tail_lines: int | None = None, limit_bytes: int | None = None,
           timestamps: bool = False) -> bytes:
    """``lines`` are (timestamp, text) pairs; tail first, then cut to limitBytes."""
    if tail_lines is not None:
        lines = lines[-tail_lines:] if tail_lines > 0 else []
    text = "".join(f"{stamp} {line}\n" if timestamps else f"{line}\n" for stamp, line in lines)
    data = text.encode()
    if limit_bytes is not None:
        data = data[:limit_bytes]
    return data
