"""A real ``mlflow server`` process on 127.0.0.1 for fault tests.

Its store (SQLite) and proxied artifacts live in a directory of the test, so the server can
be stopped and started again on the same port and the same store, as an operator would
restart it. The server runs in its own process group: stopping it ends the uvicorn workers
it spawned, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import free_port


class MlflowServerError(RuntimeError):
    """The server did not start, or did not stop, in time; the message has its log's tail."""


class MlflowServer:
    """``mlflow server --backend-store-uri sqlite:///ROOT/mlflow.db
    --artifacts-destination ROOT/artifacts --host 127.0.0.1 --port PORT --workers 1``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 120) -> None:
        """Start the server and wait until ``/health`` answers."""
        if self.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # GenAI jobs: 8 idle processes
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if not self.running:
                raise MlflowServerError(f"mlflow server exited: {self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise MlflowServerError(f"mlflow server not ready in {timeout} s: {self._tail()}")
            time.sleep(0.3)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
        """Send ``sig`` to the server's process group and wait until the port refuses."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
        deadline = time.monotonic() + timeout
        while self._healthy():
            if time.monotonic() > deadline:
                raise MlflowServerError(f"{self.url} still answers after the server stopped")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """A started server, stopped when the block ends."""
    server = MlflowServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of a server, with two faults to inject.

    - :meth:`cut` closes every connection and refuses new ones until :meth:`restore`: the
      server is unreachable, as if it were down, without the minutes a restart takes.
    - :meth:`lose_answer` arms a one-shot fault: the next request that starts with ``marker``
      (e.g. ``b"POST /api/2.0/mlflow/model-versions/create"``) is forwarded, the server
      answers, and the proxy closes the client's connection instead of passing the answer
      on. The server did the work; the client saw the connection drop.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.lost: list[bytes] = []  # the request line of each request whose answer was lost
        self.refused = 0  # connections closed while cut
        self._marker: bytes | None = None
        self._down = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_answer(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def cut(self) -> None:
        with self._lock:
            self._down = True
            sockets, self._open = list(self._open), set()
        _close(*sockets)

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                down = self._down
                self.refused += down
            if down:
                _close(client)
                continue
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open.update((client, upstream))
            doomed: list[bytes] = []
            threading.Thread(
                target=self._requests, args=(client, upstream, doomed), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(upstream, client, doomed), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, upstream: socket.socket, doomed: list[bytes]
    ) -> None:
        while chunk := _recv(client):
            with self._lock:
                if self._marker is not None and chunk.startswith(self._marker):
                    doomed.append(chunk.split(b"\r\n", 1)[0])
                    self._marker = None
            if not _send(upstream, chunk):
                break
        self._forget(upstream, client)

    def _answers(self, upstream: socket.socket, client: socket.socket, doomed: list[bytes]) -> None:
        while chunk := _recv(upstream):
            if doomed:  # the server answered the marked request: lose the answer
                self.lost.append(doomed[0])
                break
            if not _send(client, chunk):
                break
        self._forget(upstream, client)

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(sockets)
        _close(*sockets)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
