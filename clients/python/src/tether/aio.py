"""The asyncio client: one connection to a relay (or straight to an agent), many sessions on it.

    client = await tether.aio.connect("unix:/path/relay.sock")
    output = await client.exec(["uname", "-a"])
    print(output.stdout, output.exit_code)

Output is acknowledged as it is handed to the caller, so a session's window is end-to-end
backpressure: a caller that stops reading stops that program's output, and only that program's.
stdin is sent within the window the agent grants (a write waits for its acks).
"""
from __future__ import annotations

import asyncio
import collections
import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Sequence, TypeVar, Union

from . import protocol as p
from .errors import (AgentNotReadyError, ConnectionClosedError, ExecTimedOutError, InvalidArgumentError, ProtocolError,
                     RelayUnreachableError, RemoteError, TetherError, TimedOutError, remote_error, spawn_error)

StrOrBytes = Union[str, bytes]
T = TypeVar("T")


# MARK: events and results

@dataclass(frozen=True)
class Started:
    """The program started; always the first event of an exec."""
    pid: int
    kind = "started"


@dataclass(frozen=True)
class Stdout:
    data: bytes
    kind = "stdout"


@dataclass(frozen=True)
class Stderr:
    data: bytes
    kind = "stderr"


@dataclass(frozen=True)
class StdinError:
    """Writing the program's stdin failed (EPIPE: it closed its end). Not the end of the session."""
    errno: int
    message: str
    kind = "stdin_error"


@dataclass(frozen=True)
class Exited:
    """How the program ended: ``code``, or the ``signal`` that killed it; ``timed_out`` when
    that signal was the agent ending it at the exec's ``timeout``."""
    code: Optional[int]
    signal: Optional[int]
    core_dumped: bool = False
    timed_out: bool = False
    kind = "exited"

    @property
    def exit_code(self) -> int:
        """The shell's convention: the code, or 128 + the signal number."""
        return self.code if self.code is not None else 128 + (self.signal or 0)


@dataclass(frozen=True)
class Done:
    """The session's last event: everything it printed has been delivered."""
    kind = "done"


Event = Union[Started, Stdout, Stderr, StdinError, Exited, Done]


@dataclass(frozen=True)
class ExecOutput:
    """What ``exec`` returns once the program ended. A non-zero exit is a result, not an error."""
    stdout: bytes
    stderr: bytes
    #: The exit code, or 128 + N when signal N killed the program (as a shell reports it).
    exit_code: int
    #: The signal that killed the program, or None when it exited.
    signal: Optional[int] = None
    core_dumped: bool = False
    #: The agent ended the program at the exec's ``timeout`` (``exec`` raises instead).
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal is None

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def _raise_if_timed_out(output: ExecOutput, handle: "AsyncExecHandle") -> ExecOutput:
    """``exec``'s rule: a timeout is an error carrying the limit and what was printed."""
    if not output.timed_out:
        return output
    context = dict(handle._session.context)
    limit_ms = int(context.get("timeoutMs", "0") or 0)
    context["stdoutTail"] = output.stdout[-512:].decode("utf-8", "replace")
    raise ExecTimedOutError("timed out after %gs (%s)" % (limit_ms / 1000, _ending(output)),
                            operation="exec", context=context, timeout=limit_ms / 1000, output=output)


def _ending(output: ExecOutput) -> str:
    if output.signal is not None:
        return "killed by signal %d" % output.signal
    return "exited with code %d" % output.exit_code


@dataclass(frozen=True)
class SessionInfo:
    """One session the relay knows (``list_sessions``); ``session`` is what ``attach`` takes."""
    session: int
    pid: int
    argv: list[str]
    tty: bool
    detached: bool
    attached: bool
    started_ns: int
    exited: Optional[Exited] = None


# MARK: addresses

def resolve_address(address: Optional[str] = None, sandbox: Optional[str] = None) -> str:
    """The socket path for ``unix:PATH`` (or a bare path), or for a sandbox by name:
    ``$TETHER_HOME/sandboxes/NAME/relay.sock`` (``TETHER_HOME`` defaults to ``~/.tether``)."""
    if (address is None) == (sandbox is None):
        raise InvalidArgumentError("give exactly one of an address (unix:PATH) or sandbox=NAME", operation="connect")
    if sandbox is not None:
        if not sandbox or "/" in sandbox or sandbox in (".", ".."):
            raise InvalidArgumentError("%r is not a sandbox name" % sandbox, operation="connect")
        home = os.environ.get("TETHER_HOME") or os.path.join(os.path.expanduser("~"), ".tether")
        path = os.path.join(home, "sandboxes", sandbox, "relay.sock")
        if not os.path.exists(path):
            raise RelayUnreachableError("no sandbox %r (no %s)" % (sandbox, path), operation="connect",
                                        context={"sandbox": sandbox, "socket": path},
                                        suggestion="boot it with `tether boot --name %s`, or list sandboxes with `tether ls`"
                                        % sandbox)
        return path
    assert address is not None
    if address.startswith("unix:"):
        return address[len("unix:"):]
    if address.startswith("/") or address.startswith("."):
        return address
    raise InvalidArgumentError("%s is not an address" % address, operation="connect", suggestion="use unix:PATH")


# MARK: a session's inbox

class _Session:
    """One session's state, filled by the connection's reader and read by the caller's tasks."""

    def __init__(self, client: "AsyncClient", id: int, operation: str, context: dict[str, str]) -> None:
        self.client = client
        self.id = id
        self.operation = operation
        self.context = context
        self.items: collections.deque[Any] = collections.deque()
        #: None while open; then ("done",), ("detached", number) or ("failed", error).
        self.end: Optional[tuple[Any, ...]] = None
        self.exit: Optional[Exited] = None
        self.unacked = 0
        self.stdin_credit = p.WINDOW_BYTES
        self.stdin_closed = False
        self.events_taken = False
        self.stdin_taken = False
        #: ``Done`` has been handed to the events' reader.
        self.done_given = False
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def deliver(self, item: Any) -> None:
        if isinstance(item, Exited):
            self.exit = item
        self.items.append(item)
        self.notify()

    def finish(self, end: tuple[Any, ...]) -> None:
        if self.end is None:
            self.end = end
        self.notify()

    def failure(self) -> Optional[TetherError]:
        if self.end is not None and self.end[0] == "failed":
            error: TetherError = self.end[1]
            return error
        return None

    async def next(self) -> Any:
        """The next item (acking output as it is taken), or None once the session ended."""
        while True:
            if self.items:
                item = self.items.popleft()
                if isinstance(item, (Stdout, Stderr)):
                    self.unacked += len(item.data)
                    if self.unacked >= p.ACK_THRESHOLD and self.end is None:
                        self.client._send(self.id, p.ACK, p.ack(self.unacked), session=self)
                        self.unacked = 0
                return item
            if self.end is not None:
                return None
            await self.wait()

    async def peek(self) -> Any:
        while not self.items:
            if self.end is not None:
                return None
            await self.wait()
        return self.items[0]

    async def wait_for_end(self) -> None:
        while self.end is None:
            await self.wait()

    async def write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            while True:
                failure = self.failure()
                if failure is not None:
                    raise failure
                if self.end is not None:
                    raise InvalidArgumentError("the session has ended; its stdin is closed", operation="stdin",
                                               context=self.context)
                if self.stdin_closed:
                    raise InvalidArgumentError("stdin was closed", operation="stdin", context=self.context)
                if self.stdin_credit > 0:
                    break
                await self.wait()
            take = min(len(view) - offset, p.MAX_DATA_PAYLOAD, self.stdin_credit)
            self.stdin_credit -= take
            self.client._send(self.id, p.STDIN, bytes(view[offset:offset + take]), session=self)
            offset += take
            await self.client._drain()

    def close_stdin(self) -> None:
        if self.stdin_closed or self.end is not None:
            self.stdin_closed = True
            return
        self.stdin_closed = True
        self.client._send(self.id, p.STDIN, b"", flags=p.FLAG_END, session=self)


# MARK: handles

class AsyncStdinWriter:
    """A session's stdin: ``write`` waits while the agent's window is used up; ``close`` is EOF."""

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def write(self, data: StrOrBytes) -> None:
        await self._session.write_stdin(data.encode("utf-8") if isinstance(data, str) else bytes(data))

    async def close(self) -> None:
        self._session.close_stdin()
        await self._session.client._drain()


class AsyncExecHandle:
    """A running session: its events, its stdin, and control over it."""

    def __init__(self, session: _Session, pid: int, is_terminal: bool, number: Optional[int] = None,
                 dropped_bytes: int = 0) -> None:
        self._session = session
        #: The program's pid in the sandbox (0 if unknown).
        self.pid = pid
        #: The program runs on a pseudo-terminal: its output is all stdout and resize applies.
        self.is_terminal = is_terminal
        #: The relay's number for the session: set by ``attach`` and after ``detach``.
        self.session = number
        #: For ``attach``: output lost while nobody watched (the oldest, before the replay).
        self.dropped_bytes = dropped_bytes

    @property
    def id(self) -> int:
        """This connection's id for the session."""
        return self._session.id

    def events(self) -> AsyncIterator[Event]:
        """The session's events, ending with ``Done``; raises if the session ends otherwise
        (a spawn failure, the agent gone). Iterable once."""
        if self._session.events_taken:
            raise InvalidArgumentError("the events of this session are already being read",
                                       operation=self._session.operation, context=self._session.context)
        self._session.events_taken = True
        return self._events()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._next_event()
            if event is None:
                return
            yield event

    async def _next_event(self) -> Optional[Event]:
        session = self._session
        while True:
            item = await session.next()
            if item is None:
                break
            if isinstance(item, (Started, Stdout, Stderr, StdinError, Exited)):
                return item
        failure = session.failure()
        if failure is not None:
            raise failure
        if session.end is not None and session.end[0] == "done" and not session.done_given:
            session.done_given = True
            return Done()
        return None

    def take_stdin(self) -> Optional[AsyncStdinWriter]:
        """The stdin sink, once (None on a second call). Needs ``stdin=True`` or a terminal."""
        if self._session.stdin_taken:
            return None
        self._session.stdin_taken = True
        return AsyncStdinWriter(self._session)

    async def collect(self) -> ExecOutput:
        """Reads every event and returns the output and how the program ended."""
        stdout, stderr = bytearray(), bytearray()
        async for event in self.events():
            if isinstance(event, Stdout):
                stdout += event.data
            elif isinstance(event, Stderr):
                stderr += event.data
        return self._output(bytes(stdout), bytes(stderr))

    def _output(self, stdout: bytes, stderr: bytes) -> ExecOutput:
        exit = self._session.exit
        if exit is None:
            raise ProtocolError("the session ended without an exit status", operation=self._session.operation,
                                context=self._session.context)
        return ExecOutput(stdout, stderr, exit.exit_code, exit.signal, exit.core_dumped, exit.timed_out)

    async def wait(self) -> Exited:
        """Waits for the program to end. If nobody reads the events, they are read and dropped
        here (otherwise the program would stop once its window is full)."""
        session = self._session
        if not session.events_taken:
            session.events_taken = True
            while await session.next() is not None:
                pass
        else:
            await session.wait_for_end()
        failure = session.failure()
        if failure is not None:
            raise failure
        if session.end is not None and session.end[0] == "detached":
            raise InvalidArgumentError("the session was detached (session %d)" % session.end[1],
                                       operation=session.operation, context=session.context)
        if session.exit is None:
            raise ProtocolError("the session ended without an exit status", operation=session.operation,
                                context=session.context)
        return session.exit

    async def signal(self, number: int) -> None:
        """Sends signal ``number`` to the program's process group."""
        self._session.client._send(self.id, p.SIGNAL, p.signal(number), session=self._session)
        await self._session.client._drain()

    async def kill(self) -> None:
        """SIGKILL to the program's process group."""
        self._session.client._send(self.id, p.KILL, p.empty(), session=self._session)
        await self._session.client._drain()

    async def resize(self, rows: int, cols: int) -> None:
        """Sets the terminal size of a tty session (the program gets SIGWINCH)."""
        self._session.client._send(self.id, p.RESIZE, p.resize(rows, cols), session=self._session)
        await self._session.client._drain()

    async def detach(self) -> int:
        """Leaves the program running without this client; returns the relay's session number
        for ``attach``. Events that arrived before the relay took the request stay readable."""
        session = self._session
        session.client._send(self.id, p.DETACH, p.empty(), session=session)
        await session.client._drain()
        await session.wait_for_end()
        if session.end is not None and session.end[0] == "detached":
            number: int = session.end[1]
            self.session = number
            return number
        failure = session.failure()
        if failure is not None:
            raise failure
        raise InvalidArgumentError("the session ended before it could be detached", operation="detach",
                                   context=session.context)


# MARK: the client

class AsyncClient:
    """One connection. Use ``connect``; close with ``close()`` or ``async with``."""

    def __init__(self, path: str, name: str, retry_budget: float,
                 on_notice: Optional[Callable[[TetherError], None]]) -> None:
        self.path = path
        self.name = name
        self.retry_budget = retry_budget
        self.on_notice = on_notice
        #: The hello of whoever serves the socket (a relay: role "relay", its agent's capabilities).
        self.server_hello: Optional[p.Hello] = None
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._sessions: dict[int, _Session] = {}
        self._next_id = 1
        self._closed: Optional[TetherError] = None
        self._hello_waiter: Optional[asyncio.Future[p.Hello]] = None
        self._pings: dict[int, tuple[asyncio.Future[float], float]] = {}
        self._next_nonce = 1
        self._read_task: Optional[asyncio.Task[None]] = None
        self._hello_timeout = 10.0
        self._user_closed = False

    @property
    def context(self) -> dict[str, str]:
        return {"socket": "unix:" + self.path}

    @property
    def capabilities(self) -> list[str]:
        return list(self.server_hello.capabilities) if self.server_hello else []

    def supports(self, capability: str) -> bool:
        """Whether the server's hello lists ``capability`` (``"pty/1"``, or any version of ``"pty"``)."""
        return bool(self.server_hello and self.server_hello.supports(capability))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # connecting

    async def _open(self, hello_timeout: float) -> None:
        self._hello_timeout = hello_timeout
        try:
            # A large limit lets the reader buffer several whole frames between wake-ups.
            self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=4 << 20)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise RelayUnreachableError("cannot connect to unix:%s" % self.path, operation="connect",
                                        context=self.context, errno=error.errno) from None
        except OSError as error:
            raise ConnectionClosedError("cannot connect to unix:%s: %s" % (self.path, error.strerror),
                                        code="connectionFailed", operation="connect", context=self.context,
                                        errno=error.errno) from None
        loop = asyncio.get_running_loop()
        self._hello_waiter = loop.create_future()
        self._writer.write(p.frame_bytes(0, p.HELLO, p.hello("client", self.name, os.getpid())))
        self._read_task = loop.create_task(self._read_loop())
        try:
            self.server_hello = await asyncio.wait_for(asyncio.shield(self._hello_waiter), hello_timeout)
        except asyncio.TimeoutError:
            timed_out = TimedOutError("unix:%s accepted the connection but sent no hello within %gs" % (self.path, hello_timeout),
                                  operation="connect", context=self.context,
                                  suggestion="an agent serves one connection at a time: is a relay or another client connected to it?")
            self._end(timed_out)
            raise timed_out from None

    async def close(self) -> None:
        """Closes the connection; the relay kills this client's sessions that are not detached."""
        self._user_closed = True
        self._end(ConnectionClosedError("the client closed the connection", operation="close"))
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            try:
                await self._read_task
            except BaseException:
                pass

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # reading

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            while True:
                header = await reader.readexactly(p.HEADER_BYTES)
                count, id, flags, kind = p.parse_header(header)
                payload = await reader.readexactly(count) if count else b""
                self._dispatch(p.Frame(id, kind, payload, flags))
                if self._closed is not None:
                    return
        except asyncio.IncompleteReadError:
            self._end(ConnectionClosedError("the relay closed the connection (end of stream)", operation="receive",
                                            context=self.context))
        except p.FramingError as error:
            self._end(ProtocolError("the relay sent bytes that are not frames: %s" % error, operation="receive",
                                    context=self.context))
        except OSError as error:
            self._end(ConnectionClosedError("the relay closed the connection (read: %s)" % error.strerror,
                                            operation="receive", context=self.context, errno=error.errno))
        except asyncio.CancelledError:
            self._end(ConnectionClosedError("the client closed the connection", operation="close"))

    def _dispatch(self, frame: p.Frame) -> None:
        if frame.id == 0:
            self._control(frame)
            return
        session = self._sessions.get(frame.id)
        if session is None:
            return  # a late frame for a session that already ended
        try:
            self._session_frame(session, frame)
        except (p.PayloadError, KeyError, TypeError, ValueError) as error:
            session.finish(("failed", ProtocolError("%s payload: %s" % (frame.kind_name, error),
                                                    operation=session.operation, context=session.context)))
        if frame.end:
            session.finish(("done",))
            self._sessions.pop(frame.id, None)

    def _session_frame(self, session: _Session, frame: p.Frame) -> None:
        kind = frame.kind
        if kind == p.STDOUT:
            session.deliver(Stdout(frame.payload))
        elif kind == p.STDERR:
            session.deliver(Stderr(frame.payload))
        elif kind == p.STARTED:
            session.deliver(Started(int(frame.message()["pid"])))
        elif kind == p.STDIN_ERROR:
            m = frame.message()
            session.deliver(StdinError(int(m["errno"]), m.get("message") or ""))
        elif kind == p.EXITED:
            m = frame.message()
            if m.get("code") is None and m.get("signal") is None:
                raise p.PayloadError("exited has neither code nor signal")
            session.deliver(Exited(m.get("code"), m.get("signal"), bool(m.get("coreDumped", False)),
                                   bool(m.get("timedOut", False))))
        elif kind == p.ACK:
            session.stdin_credit += int(frame.message()["bytes"])
            session.notify()
        elif kind == p.DONE:
            session.finish(("done",))
        elif kind == p.FAILED:
            m = frame.message()
            session.finish(("failed", spawn_error(str(m["kind"]), int(m.get("errno") or 0), m.get("stage") or "",
                                                  m.get("message") or "", operation=session.operation,
                                                  context=session.context)))
        elif kind == p.ERROR:
            m = frame.message()
            session.finish(("failed", remote_error(str(m["code"]), m.get("message") or "", operation=session.operation,
                                                   context=session.context, errno=m.get("errno"))))
        elif kind == p.DETACHED:
            session.finish(("detached", int(frame.message()["session"])))
        else:
            session.deliver(frame)  # attached, sessionList, ...: a reply the caller reads

    def _control(self, frame: p.Frame) -> None:
        loop = asyncio.get_running_loop()
        if frame.kind == p.HELLO:
            try:
                hello = p.Hello.decode(frame.payload)
            except p.PayloadError as error:
                self._end(ProtocolError("the relay's hello is undecodable: %s" % error, operation="connect",
                                        context=self.context))
                return
            if self._hello_waiter is not None and not self._hello_waiter.done():
                self._hello_waiter.set_result(hello)
        elif frame.kind == p.PONG:
            try:
                nonce = frame.message()["nonce"]
            except (p.PayloadError, KeyError):
                return
            waiting = self._pings.pop(nonce, None)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_result(loop.time() - waiting[1])
        elif frame.kind == p.PING:
            try:
                self._send(0, p.PONG, p.pong(frame.message()["nonce"]))
            except (p.PayloadError, KeyError):
                pass
        elif frame.kind == p.ERROR:
            try:
                m = frame.message()
                news = remote_error(str(m["code"]), m.get("message") or "", operation="connection",
                                    context=self.context, errno=m.get("errno"))
            except (p.PayloadError, KeyError):
                return
            for future, _ in self._pings.values():
                if not future.done():
                    future.set_exception(news)
            self._pings.clear()
            # Before the hello, any error means the connection is refused (tooManyClients, ...);
            # framing and unsupported end a connection whenever they come.
            if self.server_hello is None or news.code in ("framing", "unsupported", "tooManyClients"):
                self._end(news)
            elif self.on_notice is not None:
                self.on_notice(news)

    # writing

    def _send(self, id: int, kind: int, payload: bytes, flags: int = 0, session: Optional[_Session] = None) -> None:
        if self._closed is not None or self._writer is None:
            return
        if session is not None and self._sessions.get(id) is not session:
            return  # the session ended: drop the frame, as a late frame would be dropped anyway
        self._writer.write(p.frame_bytes(id, kind, payload, flags))

    async def _drain(self) -> None:
        if self._writer is not None and self._closed is None:
            try:
                await self._writer.drain()
            except OSError as error:
                self._end(ConnectionClosedError("the relay closed the connection (write: %s)" % error.strerror,
                                                operation="send", context=self.context, errno=error.errno))

    def _end(self, error: TetherError) -> None:
        if self._closed is not None:
            return
        self._closed = error
        if self._hello_waiter is not None and not self._hello_waiter.done():
            self._hello_waiter.set_exception(error)
        for future, _ in self._pings.values():
            if not future.done():
                future.set_exception(error)
        self._pings.clear()
        for session in self._sessions.values():
            session.finish(("failed", type(error)(error.message, code=error.code, operation=session.operation,
                                                  context={**session.context, **error.context}, errno=error.errno)))
        self._sessions.clear()
        if self._writer is not None:
            self._writer.close()
        if self._read_task is not None and self._read_task is not asyncio.current_task() and not self._read_task.done():
            self._read_task.cancel()

    async def _connection(self) -> None:
        """Opens a new connection when the last one dropped (the relay restarted, say), as the
        Swift client does; not after ``close()``. Retries while the socket is not there yet."""
        if self._closed is None or self._user_closed:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_budget
        delay = 0.02
        while True:
            self._closed = None
            self._hello_waiter = None
            self.server_hello = None
            try:
                await self._open(self._hello_timeout)
                return
            except TetherError as error:
                if self._closed is None:
                    self._closed = error  # still closed: the next call tries again
                if not isinstance(error, RelayUnreachableError) or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _start(self, kind: int, payload: bytes, operation: str, context: dict[str, str]) -> _Session:
        if self._closed is not None:
            closed = self._closed
            raise type(closed)(closed.message, code=closed.code, operation=operation, context={**context, **closed.context},
                               errno=closed.errno)
        if len(payload) > p.MAX_PAYLOAD:
            raise InvalidArgumentError("the request is %d bytes encoded; one frame carries at most %d"
                                       % (len(payload), p.MAX_PAYLOAD), operation=operation, context=context)
        id = self._next_id
        while id == 0 or id in self._sessions:
            id = 1 if id >= 0xFFFFFFFF else id + 1
        self._next_id = 1 if id >= 0xFFFFFFFF else id + 1
        session = _Session(self, id, operation, context)
        self._sessions[id] = session
        self._send(id, kind, payload, flags=p.FLAG_START)
        return session

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Runs ``attempt`` again while it fails with agentNotReady, within the retry budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_budget
        delay = 0.02
        while True:
            try:
                return await attempt()
            except AgentNotReadyError:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # exec

    async def exec_stream(self, argv: Sequence[StrOrBytes], *, env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
                          cwd: Optional[StrOrBytes] = None, user: Optional[str] = None,
                          timeout: Optional[float] = None, stdin: bool = False,
                          tty: Optional[tuple[int, int]] = None, detach: bool = False,
                          rlimits: Optional[Mapping[str, tuple[Optional[int], Optional[int]]]] = None,
                          seccomp: Optional[str] = None, kill_grace: Optional[float] = None,
                          drain: Optional[float] = None) -> AsyncExecHandle:
        """Starts a program and returns once it started, or raises why it did not
        (``ExecFailedError``). ``tty=(rows, cols)`` runs it on a pseudo-terminal; ``stdin=True``
        gives it a pipe (``take_stdin()``); ``detach=True`` keeps it running after this client
        goes (``attach`` picks it up again); ``timeout`` in seconds (then SIGTERM, SIGKILL after
        ``kill_grace``)."""
        if not argv:
            raise InvalidArgumentError("argv is empty", operation="exec")
        payload = p.exec_request(
            argv, env=env, cwd=cwd, user=user, tty=tty, stdin=stdin,
            timeout_ms=None if timeout is None else max(0, int(timeout * 1000)),
            kill_grace_ms=p.DEFAULT_KILL_GRACE_MS if kill_grace is None else max(0, int(kill_grace * 1000)),
            drain_ms=p.DEFAULT_DRAIN_MS if drain is None else max(0, int(drain * 1000)),
            rlimits=rlimits, detach=detach, seccomp=seccomp)
        context = {"argv": " ".join(a if isinstance(a, str) else a.decode("utf-8", "replace") for a in argv)}
        if timeout is not None:
            context["timeoutMs"] = str(max(0, int(timeout * 1000)))

        async def attempt() -> AsyncExecHandle:
            await self._connection()
            session = self._start(p.EXEC, payload, "exec", context)
            # Acked ahead: the output window becomes OUTPUT_WINDOW_BYTES.
            self._send(session.id, p.ACK, p.ack(p.OUTPUT_WINDOW_BYTES - p.WINDOW_BYTES), session=session)
            first = await session.peek()
            if isinstance(first, Started):
                return AsyncExecHandle(session, first.pid, tty is not None)
            failure = session.failure()
            if first is None and failure is not None:
                raise failure
            return AsyncExecHandle(session, 0, tty is not None)

        return await self._retrying(attempt)

    async def exec(self, argv: Sequence[StrOrBytes], *, stdin: Optional[StrOrBytes] = None, **options: Any) -> ExecOutput:
        """Runs a program to its end and returns its output. ``stdin`` (bytes or text) is written
        to it and closed, while its output is read. A non-zero exit is a result, not an error;
        a program ended at its ``timeout`` raises ``ExecTimedOutError`` (with the output so far)."""
        handle = await self.exec_stream(argv, stdin=stdin is not None, **options)
        if stdin is None:
            return _raise_if_timed_out(await handle.collect(), handle)
        writer = handle.take_stdin()
        assert writer is not None

        async def feed() -> None:
            try:
                await writer.write(stdin)
                await writer.close()
            except InvalidArgumentError:
                pass  # the program ended before reading all of it: its output says what happened

        feeding = asyncio.ensure_future(feed())
        try:
            output = await handle.collect()
        finally:
            if not feeding.done():
                feeding.cancel()
            try:
                await feeding
            except (asyncio.CancelledError, TetherError):
                pass
        return _raise_if_timed_out(output, handle)

    async def shell(self, command: str, **options: Any) -> ExecOutput:
        """``/bin/sh -c command``."""
        return await self.exec(["/bin/sh", "-c", command], **options)

    async def shell_stream(self, command: str, **options: Any) -> AsyncExecHandle:
        return await self.exec_stream(["/bin/sh", "-c", command], **options)

    # sessions

    async def attach(self, session: int, replay: bool = True) -> AsyncExecHandle:
        """Takes over a detached session nobody watches: its buffered output first (unless
        ``replay`` is False), then live events. ``dropped_bytes`` says how much was lost."""
        context = {"session": str(session)}

        async def attempt() -> AsyncExecHandle:
            await self._connection()
            inbox = self._start(p.ATTACH, p.attach(session, replay), "attach", context)
            first = await inbox.next()
            if first is None:
                failure = inbox.failure()
                if failure is not None:
                    raise failure
                raise ProtocolError("the session ended before `attached`", operation="attach", context=context)
            if not isinstance(first, p.Frame) or first.kind != p.ATTACHED:
                raise ProtocolError("expected `attached`, got %r" % (first,), operation="attach", context=context)
            m = first.message()
            return AsyncExecHandle(inbox, int(m.get("pid") or 0), bool(m.get("tty", False)), int(m["session"]),
                                   int(m.get("droppedBytes") or 0))

        return await self._retrying(attempt)

    async def _request(self, kind: int, payload: bytes, operation: str, context: dict[str, str]) -> Optional[p.Frame]:
        async def attempt() -> Optional[p.Frame]:
            await self._connection()
            inbox = self._start(kind, payload, operation, context)
            reply: Optional[p.Frame] = None
            while True:
                item = await inbox.next()
                if item is None:
                    break
                if isinstance(item, p.Frame) and reply is None:
                    reply = item
            failure = inbox.failure()
            if failure is not None:
                raise failure
            return reply

        return await self._retrying(attempt)

    async def list_sessions(self) -> list[SessionInfo]:
        """The sessions the relay knows: running, detached, or ended and not yet picked up."""
        reply = await self._request(p.LIST_SESSIONS, p.empty(), "listSessions", {})
        if reply is None or reply.kind != p.SESSION_LIST:
            raise ProtocolError("expected `sessionList`", operation="listSessions", context=self.context)
        result = []
        for s in reply.message().get("sessions", []):
            e = s.get("exited")
            exited = Exited(e.get("code"), e.get("signal"), bool(e.get("coreDumped", False)),
                            bool(e.get("timedOut", False))) if e else None
            result.append(SessionInfo(int(s["session"]), int(s["pid"]), [str(a) for a in s.get("argv", [])],
                                      bool(s.get("tty", False)), bool(s.get("detached", False)),
                                      bool(s.get("attached", False)), int(s.get("startedNs", 0)), exited))
        return result

    async def signal_session(self, session: int, number: int) -> None:
        """Signals a session by its relay number (from ``list_sessions``), from any connection."""
        await self._request(p.SIGNAL_SESSION, p.signal_session(session, number), "signal",
                            {"session": str(session), "signal": str(number)})

    async def logs(self, session: Optional[int] = None, follow: bool = False) -> AsyncExecHandle:
        """The relay's exec.log as ``Stdout`` events (JSON Lines text, a line possibly split
        between events). With ``follow``, new lines keep coming until ``kill()``."""
        context = {} if session is None else {"session": str(session)}
        await self._connection()
        inbox = self._start(p.LOGS, p.logs(session, follow), "logs", context)
        return AsyncExecHandle(inbox, 0, False)

    async def ping(self) -> float:
        """The round trip to the agent through the relay, in seconds."""
        await self._connection()
        if self._closed is not None:
            raise type(self._closed)(self._closed.message, code=self._closed.code, operation="ping",
                                     context=self._closed.context)
        loop = asyncio.get_running_loop()
        nonce = self._next_nonce
        self._next_nonce += 1
        future: asyncio.Future[float] = loop.create_future()
        self._pings[nonce] = (future, loop.time())
        self._send(0, p.PING, p.ping(nonce))
        await self._drain()
        return await future


async def connect(address: Optional[str] = None, *, sandbox: Optional[str] = None, name: str = "tether-python",
                  hello_timeout: float = 10.0, retry_budget: float = 10.0,
                  on_notice: Optional[Callable[[TetherError], None]] = None) -> AsyncClient:
    """Connects to a relay at ``unix:PATH`` or to the sandbox named ``sandbox`` and waits for
    its hello. While the socket is not there yet (a sandbox still booting) it retries for
    ``retry_budget`` seconds; so does any request the relay answers with ``agentNotReady``."""
    path = resolve_address(address, sandbox)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_budget
    delay = 0.02
    while True:
        client = AsyncClient(path, name, retry_budget, on_notice)
        try:
            await client._open(hello_timeout)
            return client
        except RelayUnreachableError:
            if loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


__all__ = ["AsyncClient", "AsyncExecHandle", "AsyncStdinWriter", "Done", "Event", "ExecOutput", "Exited",
           "SessionInfo", "Started", "StdinError", "Stderr", "Stdout", "connect", "resolve_address", "RemoteError"]
