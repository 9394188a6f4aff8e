"""Rendering a pod's log the way ``GET .../pods/{name}/log`` answers.

Pure: the kubelet records lines, this module applies the query (container,
tailLines, limitBytes, timestamps) and the refusal the real kubelet gives for a
container that has not started (400, "is waiting to start").
"""

from .status import ApiError, bad_request


def check_container(pod: dict, container: str | None) -> str:
    """The container whose log is asked for; raises 400 like the real server."""
    name = pod["metadata"]["name"]
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if not container:
        if len(names) != 1:
            raise bad_request(f"a container name must be specified for pod {name}, "
                              f"choose one of: [{' '.join(names)}]")
        container = names[0]
    if container not in names:
        raise bad_request(f"container {container} is not valid for pod {name}")
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container and "waiting" not in (status.get("state") or {}):
            return container
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    reason = "ContainerCreating"
    for status in statuses:
        if status.get("name") == container:
            reason = status["state"]["waiting"].get("reason", reason)
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
