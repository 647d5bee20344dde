"""The synchronous client: the asyncio client driven from a private event loop thread.

    with tether.connect(sandbox="dev") as client:
        print(client.exec(["id"]).stdout)

Each call hands a coroutine to the loop thread and waits for its result, so a Client may be
used from any thread; the connection keeps being served (pings answered) between calls.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Iterator, Mapping, Optional, Sequence, TypeVar

from . import aio
from .aio import Event, ExecOutput, Exited, SessionInfo, StrOrBytes
from .errors import ConnectionClosedError, TetherError
from .protocol import Hello

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, for one Client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="tether-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Awaitable[T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a synchronous tether call from inside its own event loop; use tether.aio")
        if self.loop.is_closed():
            if asyncio.iscoroutine(coroutine):
                coroutine.close()
            raise ConnectionClosedError("the client was closed", operation="call")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join()
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


class StdinWriter:
    """A session's stdin (from ``ExecHandle.take_stdin()``): ``write`` waits while the agent's
    window is used up; ``close`` sends EOF."""

    def __init__(self, runner: _LoopThread, writer: aio.AsyncStdinWriter) -> None:
        self._runner = runner
        self._writer = writer

    def write(self, data: StrOrBytes) -> None:
        self._runner.run(self._writer.write(data))

    def close(self) -> None:
        self._runner.run(self._writer.close())


class ExecHandle:
    """A running session (``exec_stream``, ``shell_stream``, ``attach``)."""

    def __init__(self, runner: _LoopThread, handle: aio.AsyncExecHandle) -> None:
        self._runner = runner
        self._handle = handle

    @property
    def id(self) -> int:
        return self._handle.id

    @property
    def pid(self) -> int:
        return self._handle.pid

    @property
    def session(self) -> Optional[int]:
        """The relay's number for the session (after ``detach``, or from ``attach``)."""
        return self._handle.session

    @property
    def dropped_bytes(self) -> int:
        return self._handle.dropped_bytes

    @property
    def is_terminal(self) -> bool:
        return self._handle.is_terminal

    def events(self) -> Iterator[Event]:
        """started, stdout, stderr, stdin_error, exited, done (each event has ``.kind``).
        Raises if the session ends otherwise. Iterable once."""
        self._handle.events()  # claims the events (raises on a second call)
        while True:
            event = self._runner.run(self._handle._next_event())
            if event is None:
                return
            yield event

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def take_stdin(self) -> Optional[StdinWriter]:
        writer = self._handle.take_stdin()
        return None if writer is None else StdinWriter(self._runner, writer)

    def collect(self) -> ExecOutput:
        return self._runner.run(self._handle.collect())

    def wait(self) -> Exited:
        return self._runner.run(self._handle.wait())

    def signal(self, number: int) -> None:
        self._runner.run(self._handle.signal(number))

    def kill(self) -> None:
        self._runner.run(self._handle.kill())

    def resize(self, rows: int, cols: int) -> None:
        self._runner.run(self._handle.resize(rows, cols))

    def detach(self) -> int:
        return self._runner.run(self._handle.detach())


class Client:
    """A connection to a relay; see ``tether.connect``. Close it with ``close()`` or ``with``."""

    def __init__(self, runner: _LoopThread, client: aio.AsyncClient) -> None:
        self._runner = runner
        self._client = client

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def server_hello(self) -> Optional[Hello]:
        return self._client.server_hello

    @property
    def capabilities(self) -> list[str]:
        return self._client.capabilities

    def supports(self, capability: str) -> bool:
        return self._client.supports(capability)

    def close(self) -> None:
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.stop()

    def exec(self, argv: Sequence[StrOrBytes], *, env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
             cwd: Optional[StrOrBytes] = None, user: Optional[str] = None, timeout: Optional[float] = None,
             stdin: Optional[StrOrBytes] = None, **options: Any) -> ExecOutput:
        """Runs a program to its end: ``ExecOutput(stdout, stderr, exit_code, signal)``.
        A program that never started raises ``ExecFailedError`` (``FileNotFoundError`` for a
        missing program)."""
        return self._runner.run(self._client.exec(argv, env=env, cwd=cwd, user=user, timeout=timeout, stdin=stdin,
                                                  **options))

    def exec_stream(self, argv: Sequence[StrOrBytes], **options: Any) -> ExecHandle:
        """Starts a program; see ``tether.aio.AsyncClient.exec_stream`` for the options."""
        return ExecHandle(self._runner, self._runner.run(self._client.exec_stream(argv, **options)))

    def shell(self, command: str, **options: Any) -> ExecOutput:
        return self._runner.run(self._client.shell(command, **options))

    def shell_stream(self, command: str, **options: Any) -> ExecHandle:
        return ExecHandle(self._runner, self._runner.run(self._client.shell_stream(command, **options)))

    def attach(self, session: int, replay: bool = True) -> ExecHandle:
        return ExecHandle(self._runner, self._runner.run(self._client.attach(session, replay)))

    def list_sessions(self) -> list[SessionInfo]:
        return self._runner.run(self._client.list_sessions())

    def signal_session(self, session: int, number: int) -> None:
        self._runner.run(self._client.signal_session(session, number))

    def logs(self, session: Optional[int] = None, follow: bool = False) -> ExecHandle:
        return ExecHandle(self._runner, self._runner.run(self._client.logs(session, follow)))

    def ping(self) -> float:
        return self._runner.run(self._client.ping())


def connect(address: Optional[str] = None, *, sandbox: Optional[str] = None, name: str = "tether-python",
            hello_timeout: float = 10.0, retry_budget: float = 10.0,
            on_notice: Optional[Callable[[TetherError], None]] = None) -> Client:
    """Connects to ``"unix:PATH"`` or to the sandbox named ``sandbox`` (its relay socket under
    ``$TETHER_HOME``, default ``~/.tether``) and returns a synchronous Client."""
    runner = _LoopThread()
    try:
        client = runner.run(aio.connect(address, sandbox=sandbox, name=name, hello_timeout=hello_timeout,
                                        retry_budget=retry_budget, on_notice=on_notice))
    except BaseException:
        runner.stop()
        raise
    return Client(runner, client)
