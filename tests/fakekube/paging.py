"""LIST in chunks: ``limit`` and ``continue``, as the API server pages through etcd.

After the docs' "API Concepts: Retrieving large results sets in chunks" and
k8s.io/apiserver's etcd3 store:

- ``limit=N`` returns at most N matching items in key order; if more remain,
  ``metadata.continue`` holds a token and, when the LIST has no label or field
  selector, ``metadata.remainingItemCount`` how many (with a selector the count
  would be wrong, so it is left out).
- The token is base64url JSON ``{"v": "meta.k8s.io/v1", "rv": N, "start": key}``.
  Every later page is served from the snapshot at the first page's
  resourceVersion (and reports that version), so the pages add up to one
  consistent list.
- Once that version has been compacted away the server answers 410 Gone
  (``Expired``) with a Status carrying a fresh token (``rv`` -1) that continues
  from the same key at the latest version, inconsistently. A token the server
  cannot read is 400.
"""

import base64
import binascii
import json

from .status import ApiError, bad_request

INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list.")


def encode(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> tuple[int, str]:
    """``(rv, start key)`` of a continue token; rv -1 means "at the latest version"."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data.get("v") != "meta.k8s.io/v1" or not isinstance(data.get("rv"), int) or not data.get("start"):
            raise ValueError("not a continue token")
    except (ValueError, binascii.Error, AttributeError) as exc:
        raise bad_request(f"continue key is not valid: {exc}") from None
    return data["rv"], data["start"]


def expired(start: str) -> ApiError:
    """The 410 for a token whose snapshot is gone, with the inconsistent-continue token."""
    error = ApiError(410, "Expired", INCONSISTENT_CONTINUE)
    error.body["metadata"] = {"continue": encode(-1, start)}
    return error


def page(items: list[tuple[str, dict]], limit: int | None, start: str | None,
         count_remaining: bool) -> tuple[list[dict], dict]:
    """One chunk of ``items`` ((key, object) pairs in key order, already filtered): the
    objects and the list metadata to add (``continue``, ``remainingItemCount``)."""
    if start is not None:
        items = [(key, obj) for key, obj in items if key >= start]
    if limit is None or limit <= 0 or len(items) <= limit:
        return [obj for _, obj in items], {}
    chunk, rest = items[:limit], items[limit:]
    extra = {"continue": chunk[-1][0] + "\x00"}
    if count_remaining:
        extra["remainingItemCount"] = len(rest)
    return [obj for _, obj in chunk], extra
