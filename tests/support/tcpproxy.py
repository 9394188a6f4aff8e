"""A TCP proxy in front of the real RabbitMQ that can go silent, as a lost load-balancer
node or a dropped NAT entry does: the connections stay open, and nothing more crosses
them in either direction (no FIN, no RST, no heartbeat)."""

from __future__ import annotations

import selectors
import socket
import threading
import time


class SilentableProxy:
    """``127.0.0.1:<port>`` → ``target``. ``silence(first, last)`` stops forwarding on the
    connections accepted ``first`` to ``last`` (1-based; no ``last``: every one from
    ``first`` on, new ones included); ``speak()`` forwards again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._silent: tuple[int, float] | None = None  # 0-based indexes of the first and last silent ones
        self._closed = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def silence(self, first: int = 1, last: int | None = None) -> None:
        with self._lock:
            self._silent = (first - 1, float("inf") if last is None else last - 1)

    def speak(self) -> None:
        with self._lock:
            self._silent = None

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        for a, b in self._pairs:
            a.close()
            b.close()
        self._server.close()

    def _is_silent(self, index: int) -> bool:
        with self._lock:
            return self._silent is not None and self._silent[0] <= index <= self._silent[1]

    def _run(self) -> None:
        while not self._closed:
            moved = False
            for key, _ in self._selector.select(timeout=0.05):
                if key.data is None:
                    self._accept()
                    moved = True
                else:
                    moved |= self._forward(key.fileobj, *key.data)  # type: ignore[arg-type]
            if not moved:
                time.sleep(0.02)  # only silent connections are readable: do not spin on them

    def _accept(self) -> None:
        client, _ = self._server.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            index = len(self._pairs)
            self._pairs.append((client, upstream))
        self._selector.register(client, selectors.EVENT_READ, (upstream, index))
        self._selector.register(upstream, selectors.EVENT_READ, (client, index))

    def _forward(self, source: socket.socket, sink: socket.socket, index: int) -> bool:
        """Move what ``source`` has to ``sink``; whether anything moved."""
        if self._is_silent(index):
            return False  # leave the bytes in the kernel's buffers: nothing crosses, nothing closes
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        if not data:
            for s in (source, sink):
                try:
                    self._selector.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            return True
        try:
            sink.sendall(data)
        except OSError:
            pass
        return True
