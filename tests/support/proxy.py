"""A small TCP proxy on loopback that can break the connection on demand, for fault tests.

It forwards every accepted connection to one target and lets a test, at any moment, cut every open
connection (with a reset), refuse new ones, stop forwarding for a while, or cut a connection once
the server has sent it a given number of bytes (the middle of a large FETCH, say).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024
TICK_S = 0.05


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a crashed peer or a middlebox dropping the flow would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.from_server = 0
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def cut(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            _reset(self.client)
            _reset(self.server)

    def pump(self) -> None:
        try:
            while not self.closed.is_set():
                if self.proxy.stalled:
                    time.sleep(TICK_S)
                    continue
                readable, _, _ = select.select([self.client, self.server], [], [], TICK_S)
                for source in readable:
                    if self.proxy.stalled:
                        break
                    data = source.recv(CHUNK)
                    if not data:
                        return
                    if source is self.server:
                        data = self._within_budget(data)
                        self.client.sendall(data)
                        self.from_server += len(data)
                        if self.proxy.over_budget(self.from_server):
                            return
                    else:
                        self.server.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            self.cut()
            self.proxy.forget(self)

    def _within_budget(self, data: bytes) -> bytes:
        budget = self.proxy.server_byte_budget
        if budget is None:
            return data
        return data[: max(budget - self.from_server, 0)]


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; the controls take effect immediately."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.host = LOOPBACK
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refusing = False
        self._stalled_until = 0.0
        self.server_byte_budget: int | None = None
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut_all()

    # --- controls -------------------------------------------------------------------------------

    def cut_all(self) -> int:
        """Reset every open connection now; returns how many there were."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.cut()
        return len(links)

    def refuse(self, refusing: bool = True) -> None:
        """Accept new connections and reset them at once (as a server that is going away does)."""
        self._refusing = refusing

    def stall(self, seconds: float) -> None:
        """Stop forwarding in both directions for ``seconds`` (connections stay open)."""
        self._stalled_until = time.monotonic() + seconds

    def cut_after_server_bytes(self, limit: int | None) -> None:
        """Reset a connection once the server has sent ``limit`` bytes on it (None: never)."""
        self.server_byte_budget = limit

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self._stalled_until

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    # --- internals ------------------------------------------------------------------------------

    def over_budget(self, sent: int) -> bool:
        if self.server_byte_budget is not None and sent >= self.server_byte_budget:
            self.cuts += 1
            return True
        return False

    def forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept_loop(self) -> None:
        self._listener.settimeout(TICK_S)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            client.settimeout(None)
            link = _Link(self, client, server)
            with self._lock:
                self._links.add(link)
            threading.Thread(target=link.pump, name=f"proxy-link-{self.port}", daemon=True).start()
