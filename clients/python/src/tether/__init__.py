"""Tether: a client for the Tether sandbox agent and relay.

    import tether
    with tether.connect(sandbox="dev") as client:        # or tether.connect("unix:/path/relay.sock")
        out = client.exec(["uname", "-a"])
        print(out.stdout.decode(), out.exit_code)

``tether.connect`` gives a synchronous client; ``tether.aio.connect`` the asyncio one it is
built on. ``tether.protocol`` has the wire format (docs/PROTOCOL.md in the repository).
"""
from . import aio, protocol
from .aio import (Done, Event, ExecOutput, Exited, SessionInfo, Started, StdinError, Stderr, Stdout)
from .client import Client, ExecHandle, StdinWriter, connect
from .errors import (AgentGoneError, AgentNotReadyError, AgentUnresponsiveError, BadPayloadError,
                     ConnectionClosedError, ExecFailedError, ExecTimedOutError, FileNotFoundError, HelloRequiredError,
                     InvalidArgumentError, LimitReachedError, PermissionDeniedError, ProtocolError,
                     RelayUnreachableError, RemoteError, SessionInUseError, ShuttingDownError, TetherError,
                     TimedOutError, TooManyClientsError, UnknownKindError, UnknownSessionError, UnsupportedError)

__version__ = "0.1.0"

__all__ = [
    "aio", "protocol", "connect", "Client", "ExecHandle", "StdinWriter",
    "Event", "Started", "Stdout", "Stderr", "StdinError", "Exited", "Done", "ExecOutput", "SessionInfo",
    "TetherError", "ExecFailedError", "FileNotFoundError", "PermissionDeniedError", "RemoteError",
    "RelayUnreachableError", "ConnectionClosedError", "InvalidArgumentError", "TimedOutError", "ExecTimedOutError", "ProtocolError",
    "AgentNotReadyError", "AgentGoneError", "AgentUnresponsiveError", "UnknownSessionError", "SessionInUseError",
    "LimitReachedError", "TooManyClientsError", "HelloRequiredError", "UnknownKindError", "BadPayloadError",
    "UnsupportedError", "ShuttingDownError",
]
