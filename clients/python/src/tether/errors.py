"""Every failure the client reports, mirroring the Swift library's TetherError.

A program that exits non-zero is not an error (``ExecOutput.exit_code``); a program that never
started is (``ExecFailedError`` with ``kind``, ``errno`` and ``stage``). Each error carries
``code``, ``message``, ``operation``, ``context`` and ``suggestion``, and ``to_json()`` gives all
of it as one JSON object.
"""
from __future__ import annotations

import builtins
import datetime
import json
import os
from typing import Any, Optional


class TetherError(Exception):
    """Base of every error of this package. ``code`` is the wire error code (``agentGone``,
    ``unknownSession``, ...) or one the client adds (``relayUnreachable``, ``spawnFailed``, ...)."""

    code: str = "internal"
    errno: Optional[int]

    def __init__(self, message: str, *, code: Optional[str] = None, operation: str = "",
                 context: Optional[dict[str, str]] = None, suggestion: Optional[str] = None,
                 errno: Optional[int] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.operation = operation
        self.context: dict[str, str] = dict(context or {})
        self.suggestion = suggestion if suggestion is not None else _SUGGESTIONS.get(self.code)
        # OSError subclasses (FileNotFoundError, ...) keep errno in their own slot; set it either way.
        self.errno = errno
        self.timestamp = datetime.datetime.now(datetime.timezone.utc)

    def __str__(self) -> str:
        text = "%s: %s" % (self.operation, self.message) if self.operation else self.message
        if self.errno:
            text += " (%s)" % os.strerror(self.errno)
        return text

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"code": self.code, "message": self.message, "operation": self.operation,
                                  "context": self.context, "timestamp": self.timestamp.isoformat()}
        if self.suggestion is not None:
            result["suggestion"] = self.suggestion
        if self.errno is not None:
            result["errno"] = self.errno
        return result

    def to_json(self) -> str:
        """The error as one JSON object, keys sorted."""
        return json.dumps(self.to_dict(), sort_keys=True)


class RelayUnreachableError(TetherError, builtins.ConnectionRefusedError):
    """No socket at the address, or nobody listens on it."""
    code = "relayUnreachable"


class ConnectionClosedError(TetherError, builtins.ConnectionError):
    """The connection ended while something was in flight."""
    code = "connectionClosed"


class InvalidArgumentError(TetherError, builtins.ValueError):
    """The caller asked for something that cannot be done (empty argv, stdin taken twice)."""
    code = "invalidArgument"


class TimedOutError(TetherError, builtins.TimeoutError):
    code = "timedOut"


class ExecTimedOutError(TimedOutError):
    """``exec``'s program ran past its ``timeout`` and the agent ended it: ``timeout`` is the
    limit in seconds, ``output`` what it printed and how it ended (``context["timeoutMs"]`` and
    ``context["stdoutTail"]`` say the same for logs)."""

    def __init__(self, message: str, *, timeout: float, output: Any, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.timeout = timeout
        self.output = output


class ProtocolError(TetherError):
    """The peer sent something this client cannot read."""
    code = "protocolError"


class RemoteError(TetherError):
    """An ``error`` message from the relay or agent; ``code`` is its wire code."""


class AgentNotReadyError(RemoteError):
    """The relay is (re)connecting to its agent; the request did not reach it. Retrying is safe."""
    code = "agentNotReady"


class AgentGoneError(RemoteError):
    code = "agentGone"


class AgentUnresponsiveError(RemoteError):
    code = "agentUnresponsive"


class UnknownSessionError(RemoteError):
    code = "unknownSession"


class SessionInUseError(RemoteError):
    code = "sessionInUse"


class LimitReachedError(RemoteError):
    code = "limitReached"


class TooManyClientsError(RemoteError):
    """The relay takes no more clients."""
    code = "tooManyClients"


class HelloRequiredError(RemoteError):
    code = "helloRequired"


class UnknownKindError(RemoteError):
    code = "unknownKind"


class BadPayloadError(RemoteError):
    code = "badPayload"


class UnsupportedError(RemoteError):
    code = "unsupported"


class ShuttingDownError(RemoteError):
    code = "shuttingDown"


class ExecFailedError(TetherError):
    """The program never started. ``kind`` says why (``notFound``, ``permissionDenied``,
    ``badCwd``, ...), ``errno`` the error the failing step got, ``stage`` which step
    (``exec``, ``chdir``, ``setuid``, ...)."""
    code = "spawnFailed"

    def __init__(self, message: str, *, kind: str, errno: int, stage: str, spawn_message: str = "",
                 operation: str = "exec", context: Optional[dict[str, str]] = None,
                 suggestion: Optional[str] = None) -> None:
        super().__init__(message, operation=operation, context=context,
                         suggestion=suggestion if suggestion is not None else _SPAWN_SUGGESTIONS.get(kind),
                         errno=errno)
        self.kind = kind
        self.stage = stage
        self.spawn_message = spawn_message

    def to_dict(self) -> dict[str, Any]:
        result = super().to_dict()
        result["spawn"] = {"kind": self.kind, "errno": self.errno, "stage": self.stage, "message": self.spawn_message}
        return result


class FileNotFoundError(ExecFailedError, builtins.FileNotFoundError):
    """The program does not exist in the sandbox (``kind == "notFound"``). Also Python's own
    FileNotFoundError, so ``except FileNotFoundError`` catches it either way."""


class PermissionDeniedError(ExecFailedError, builtins.PermissionError):
    """``kind == "permissionDenied"``. Also Python's own PermissionError."""


_REMOTE: dict[str, type[RemoteError]] = {cls.code: cls for cls in (
    AgentNotReadyError, AgentGoneError, AgentUnresponsiveError, UnknownSessionError, SessionInUseError,
    LimitReachedError, TooManyClientsError, HelloRequiredError, UnknownKindError, BadPayloadError,
    UnsupportedError, ShuttingDownError)}

_SPAWN_SUMMARY = {
    "notFound": "program not found", "permissionDenied": "permission denied",
    "notExecutable": "not an executable", "badCwd": "cannot change to the working directory",
    "badArgs": "invalid arguments", "resourceLimit": "resource limit reached",
    "userSetupFailed": "cannot switch to the user",
    "outOfMemory": "out of memory", "ptySetupFailed": "cannot set up the terminal",
}

_SPAWN_SUGGESTIONS = {
    "notFound": "check the program name and PATH inside the sandbox",
    "permissionDenied": "check the file's execute permission and the user the command runs as",
    "notExecutable": "the file is not a program this system can run (a directory, or a script without #!)",
    "badCwd": "check that the working directory exists in the sandbox",
    "userSetupFailed": "check the user and group names against the sandbox's /etc/passwd and /etc/group",
    "badArgs": "arguments must not contain NUL bytes or exceed the system's size limit",
    "resourceLimit": "the sandbox is out of processes or descriptors; end some sessions or raise the limits",
    "outOfMemory": "the sandbox is out of memory",
}

_SUGGESTIONS = {
    "relayUnreachable": "start the sandbox (tether boot) or the relay (tether relay --agent ADDR --listen unix:PATH)",
    "connectionClosed": "the relay stopped or restarted; check its log and try again",
    "agentNotReady": "the sandbox is still starting or restarting; try again shortly",
    "agentGone": "the sandbox's agent went away (the VM stopped or crashed); check the sandbox and the relay's log",
    "agentUnresponsive": "the sandbox is overloaded or frozen; check it, or wait and retry",
    "unknownSession": "list sessions with client.list_sessions() or `tether ps`",
    "sessionInUse": "only detached sessions that nobody watches can be attached",
    "tooManyClients": "close other clients of this sandbox, or start its relay with a higher --max-clients",
    "unsupported": "use a client, relay and agent of the same protocol version",
    "timedOut": "the relay or agent did not answer in time; check the sandbox",
}


def remote_error(code: str, message: str, *, operation: str, context: Optional[dict[str, str]] = None,
                 errno: Optional[int] = None) -> RemoteError:
    """The exception for an ``error`` message with wire code ``code`` (an unknown code gives RemoteError)."""
    cls = _REMOTE.get(code, RemoteError)
    return cls(message or code, code=code, operation=operation, context=context, errno=errno)


def spawn_error(kind: str, errno: int, stage: str, message: str, *, operation: str = "exec",
                context: Optional[dict[str, str]] = None) -> ExecFailedError:
    """The exception for a ``failed`` message."""
    what = _SPAWN_SUMMARY.get(kind, "the program did not start (%s)" % kind)
    detail = ": " + message if message else ""
    text = "%s%s (stage %s, errno %d)" % (what, detail, stage or "?", errno)
    cls: type[ExecFailedError] = ExecFailedError
    if kind == "notFound":
        cls = FileNotFoundError
    elif kind == "permissionDenied":
        cls = PermissionDeniedError
    return cls(text, kind=kind, errno=errno, stage=stage, spawn_message=message, operation=operation, context=context)
