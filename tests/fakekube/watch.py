"""The body of a watch response: newline-delimited JSON events, flushed one by one.

Semantics follow the API server: without a resourceVersion (or with "0") the
stream opens with ADDED for every current match; with one, it replays every
later event from history, then goes live. A version older than history gets
one ``ERROR`` event carrying a 410 ``Expired`` Status, then the stream ends.
Streams end cleanly at ``timeoutSeconds`` (with a BOOKMARK if asked for),
when the server stops, or when the client has gone away.

With ``allowWatchBookmarks=true`` a BOOKMARK carrying the current resourceVersion
comes as the API server's watch cache sends it (``cacher.go`` ``dispatchEvents``,
``cache_watcher.go`` ``nextBookmarkTime``, 1.35): at most every ``bookmark_interval``
seconds (a minute, the cache's ``bookmarkFrequency``) and from 2 s before
``timeoutSeconds`` on (each second; at once for a shorter watch), and only when objects of
the watched resource changed since the watch's version, in any namespace and whatever
its selector: a bookmark is never older than what the watcher saw, so a watch on a
resource nobody touches gets none at all. None when the stream ends. Events are not in
the watch cache (kube-apiserver's default cache sizes leave them out), so a watch on
events gets no bookmark either.

Two faults act on the stream: :func:`cut_after` drops the connection after N
events; :func:`fall_silent` keeps it open but sends nothing more at all — no
events, no bookmarks, no end at ``timeoutSeconds`` — until the client gives up,
as a watch does behind a wedged proxy or a stalled API server.

A change that moves an object into or out of the watch's selection comes as the API
server's watch cache sends it (``cacher/cache_watcher.go``): into it as ``ADDED``, out of
it as ``DELETED`` carrying the object's previous content at the new resourceVersion.
"""

import json
import logging
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .objects import Resource
from .selector import Predicate
from .status import expired
from .store import Expired, Store

logger = logging.getLogger(__name__)

# How often an idle stream looks whether its client hung up, in seconds.
IDLE_CHECK = 0.5
# The watch cache's last bookmark comes this long before the watch's timeoutSeconds.
PRETIMEOUT_BOOKMARK = 2.0


@dataclass(frozen=True)
class WatchRequest:
    resource: Resource
    namespace: str | None
    predicate: Predicate
    since: int | None  # None: start with the current state
    timeout: float
    bookmarks: bool
    bookmark_interval: float


def _line(kind: str, obj: dict) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


def _selected(predicate: Predicate, event) -> bytes | None:
    """The event as this watch sees it (see the module docstring), or None."""
    now = predicate(event.object)
    before = event.previous is not None and event.type == "MODIFIED" and predicate(event.previous)
    if now:
        return _line("ADDED" if event.type == "MODIFIED" and event.previous is not None and not before
                     else event.type, event.object)
    if before:
        version = event.object["metadata"]["resourceVersion"]
        return _line("DELETED", dict(event.previous, metadata=dict(event.previous["metadata"],
                                                                   resourceVersion=version)))
    return None


def _bookmark(resource: Resource, version: int) -> bytes:
    return _line("BOOKMARK", {"kind": resource.kind, "apiVersion": resource.api_version,
                              "metadata": {"resourceVersion": str(version)}})


def gone_line(message: str) -> bytes:
    return _line("ERROR", expired(message).body)


def client_gone(sock: socket.socket | None) -> bool:
    """True when the peer has closed its end (readable, and a peek reads nothing)."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def events(store: Store, request: WatchRequest, sock: socket.socket | None = None) -> Iterator[bytes]:
    """Yield the encoded events of one watch; see the module docstring."""
    if request.since is None:
        items, cursor = store.list(request.resource, request.namespace, request.predicate)
        for item in items:
            yield _line("ADDED", item)
    else:
        cursor = request.since
    started = time.monotonic()
    deadline = started + request.timeout
    bookmarks = request.bookmarks and request.resource.plural != "events"
    bookmarked = cursor  # the version the client has: a bookmark must be newer
    next_bookmark = min(started + request.bookmark_interval, deadline - PRETIMEOUT_BOOKMARK)
    while (remaining := deadline - time.monotonic()) > 0:
        wait = min(remaining, IDLE_CHECK)
        if bookmarks:
            wait = max(0.0, min(wait, next_bookmark - time.monotonic()))
        try:
            batch, cursor = store.events_after(request.resource, request.namespace, cursor, wait)
        except Expired as exc:
            yield gone_line(str(exc))
            return
        if store.closed:
            return
        matching = [line for event in batch if (line := _selected(request.predicate, event)) is not None]
        for line in matching:
            yield line
        if not matching and client_gone(sock):
            logger.debug("watch client went away")
            return
        now = time.monotonic()
        if bookmarks and now >= next_bookmark:
            if _resource_changed(store, request.resource, bookmarked):
                yield _bookmark(request.resource, cursor)
                bookmarked = cursor
            pretimeout = deadline - PRETIMEOUT_BOOKMARK
            next_bookmark = now + 1.0 if now >= pretimeout else min(now + request.bookmark_interval, pretimeout)


def _resource_changed(store: Store, resource: Resource, since: int) -> bool:
    """Some object of ``resource``, in any namespace, changed after version ``since``."""
    try:
        return bool(store.events_after(resource, None, since, 0)[0])
    except Expired:
        return True


def cut_after(lines: Iterator[bytes], limit: int | None, sock: socket.socket | None) -> Iterator[bytes]:
    """Pass ``limit`` events through, then drop the connection without a final chunk."""
    if limit is None or sock is None:
        yield from lines
        return
    try:
        sent = 0
        while sent < limit:
            line = next(lines, None)
            if line is None:
                return
            yield line
            sent += 1
        logger.info("cutting watch stream after %d events (fault)", limit)
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        lines.close()


def fall_silent(lines: Iterator[bytes], after: int, sock: socket.socket | None,
                stopped) -> Iterator[bytes]:
    """Pass ``after`` events through, then send nothing until the client hangs up or
    ``stopped()`` (the server is stopping); the connection stays open meanwhile."""
    try:
        for _ in range(after):
            line = next(lines, None)
            if line is None:
                return
            yield line
        lines.close()
        logger.info("watch stream falls silent after %d events (fault)", after)
        while not stopped() and not client_gone(sock):
            time.sleep(IDLE_CHECK / 5)
    finally:
        lines.close()
