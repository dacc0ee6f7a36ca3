"""A TCP proxy on loopback that a test can cut: a worker's only road to PostgreSQL or Redis.

`cut()` resets every connection through it and refuses new ones (what a worker sees when its
network drops its connections and the server is unreachable); `heal()` lets new connections
through again. Threads, not asyncio: it runs beside a test's event loop and blocking clients.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards `127.0.0.1:port` to `127.0.0.1:target_port` until cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.cuts = 0
        """Connections reset by `cut` or refused while cut."""
        threading.Thread(target=self._accept, name=f"proxy :{self.port}", daemon=True).start()

    def url(self, template: str) -> str:
        """`template` with `{port}` replaced by this proxy's port."""
        return template.replace("{port}", str(self.port))

    def cut(self) -> None:
        """Reset every connection and refuse new ones."""
        with self._lock:
            self._cut = True
            doomed = list(self._open)
            self._open.clear()
            self.cuts += len(doomed)
        for sock in doomed:
            _reset(sock)

    def heal(self) -> None:
        """Let new connections through."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stop listening and reset everything."""
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._cut
                if refuse:
                    self.cuts += 1
            if refuse:
                _reset(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0): the peer sees `connection reset`, as when a network path drops."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
