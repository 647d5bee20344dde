"""The client against a real agent and relay (see conftest.py)."""
from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

import tether
from tether import aio

from conftest import LiveRelay


def test_hello_names_the_relay_and_versioned_capabilities(client: tether.Client) -> None:
    hello = client.server_hello
    assert hello is not None and hello.role == "relay" and hello.version == 1
    assert client.supports("exec/1") and client.supports("pty/1") and client.supports("relay/1")
    assert all(re.fullmatch(r"[a-z]+/[0-9]+", c) for c in client.capabilities), client.capabilities


def test_exec_returns_output_and_exit_codes(client: tether.Client) -> None:
    out = client.exec(["sh", "-c", "printf out; printf err >&2; exit 3"])
    assert (out.stdout, out.stderr, out.exit_code, out.signal) == (b"out", b"err", 3, None)
    assert client.exec(["true"]).exit_code == 0
    killed = client.shell("kill -9 $$")
    assert (killed.signal, killed.exit_code) == (9, 128 + 9)


def test_exec_options_env_cwd_timeout(client: tether.Client, tmp_path: Path) -> None:
    out = client.exec(["sh", "-c", 'echo "$FOO"; pwd'], env={"FOO": "bar"}, cwd=str(tmp_path))
    assert out.stdout.decode().splitlines() == ["bar", str(tmp_path)]
    # A timeout is an error of exec, carrying the limit and the output so far ...
    with pytest.raises(tether.ExecTimedOutError) as caught:
        client.exec(["sh", "-c", "echo begun; exec sleep 30"], timeout=0.3, kill_grace=1)
    error = caught.value
    assert isinstance(error, tether.TimedOutError) and error.code == "timedOut"
    assert error.timeout == 0.3 and error.context["timeoutMs"] == "300"
    assert error.output.timed_out and error.output.signal == 15 and error.output.stdout == b"begun\n"
    assert str(error) == "exec: timed out after 0.3s (killed by signal 15)"
    # ... and a flag on the stream's exit, which ends like any other.
    handle = client.exec_stream(["sleep", "30"], timeout=0.3, kill_grace=1)
    exited = handle.wait()
    assert exited.timed_out and exited.signal == 15
    # A program that ends on its own before its timeout is not flagged.
    assert not client.exec(["true"], timeout=30).timed_out


@pytest.mark.skipif(os.geteuid() != 0, reason="running a command as another user needs a root agent")
def test_exec_as_another_user(client: tether.Client) -> None:
    assert client.exec(["id", "-u"], user="nobody").stdout.strip() == b"65534"


def test_a_missing_program_is_a_typed_spawn_failure(client: tether.Client) -> None:
    with pytest.raises(tether.FileNotFoundError) as caught:
        client.exec(["/nonexistent/program", "x"])
    error = caught.value
    assert isinstance(error, builtins.FileNotFoundError) and isinstance(error, tether.ExecFailedError)
    assert (error.code, error.kind, error.errno, error.stage) == ("spawnFailed", "notFound", 2, "exec")
    assert error.operation == "exec" and error.context["argv"] == "/nonexistent/program x"
    assert error.suggestion
    record = json.loads(error.to_json())
    assert record["spawn"]["kind"] == "notFound" and record["code"] == "spawnFailed"

    with pytest.raises(tether.ExecFailedError) as bad_cwd:
        client.exec(["true"], cwd="/nonexistent-directory")
    assert bad_cwd.value.kind == "badCwd" and bad_cwd.value.errno == 2
    assert not isinstance(bad_cwd.value, builtins.FileNotFoundError)


def test_64_mib_of_stdout_arrive_whole(client: tether.Client, tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = client.shell("head -c 67108864 /dev/urandom > %s && sha256sum %s >&2 && cat %s" % (data, data, data))
    assert out.exit_code == 0, out.stderr
    assert len(out.stdout) == 64 << 20
    assert hashlib.sha256(out.stdout).hexdigest() == out.stderr.split()[0].decode()


def test_5_mib_of_stdin_arrive_whole(client: tether.Client) -> None:
    data = os.urandom(5 << 20)
    out = client.exec(["sha256sum"], stdin=data)
    assert out.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    echoed = client.exec(["cat"], stdin=data)
    assert echoed.stdout == data


def test_stream_events_in_order_and_stdin_taken_once(client: tether.Client) -> None:
    handle = client.exec_stream(["sh", "-c", "read line; echo got $line; echo warn >&2; exit 4"], stdin=True)
    assert handle.pid > 0
    stdin = handle.take_stdin()
    assert stdin is not None and handle.take_stdin() is None
    stdin.write("hello\n")
    stdin.close()
    events = list(handle.events())
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["exited", "done"]
    assert b"".join(e.data for e in events if e.kind == "stdout") == b"got hello\n"
    assert b"".join(e.data for e in events if e.kind == "stderr") == b"warn\n"
    assert events[-2] == tether.Exited(4, None, False)
    with pytest.raises(tether.InvalidArgumentError):
        list(handle.events())


def test_a_program_that_closes_stdin_gives_stdin_error(client: tether.Client) -> None:
    handle = client.exec_stream(["sh", "-c", "exec 0<&-; sleep 0.2; echo closed"], stdin=True)
    stdin = handle.take_stdin()
    assert stdin is not None
    try:
        for _ in range(64):
            stdin.write(b"x" * 65536)
        stdin.close()
    except tether.InvalidArgumentError:
        pass  # the session ended while writing
    events = list(handle.events())
    assert any(e.kind == "stdin_error" and e.errno == 32 for e in events), events


def test_signal_and_kill(client: tether.Client) -> None:
    handle = client.exec_stream(["sleep", "30"])
    handle.signal(15)
    assert handle.wait().signal == 15
    handle = client.exec_stream(["sleep", "30"])
    handle.kill()
    assert handle.wait().signal == 9


def test_pty_reports_its_size_after_a_resize(client: tether.Client) -> None:
    handle = client.exec_stream(["sh", "-c", "read go; stty size"], tty=(24, 80))
    assert handle.is_terminal
    handle.resize(40, 120)
    stdin = handle.take_stdin()
    assert stdin is not None
    stdin.write("go\n")
    out = handle.collect()
    assert out.exit_code == 0
    assert "40 120" in out.stdout.decode(), out.stdout


def test_detach_and_reattach(live: LiveRelay) -> None:
    first = live.client()
    handle = first.exec_stream(["sh", "-c", "echo before; read x; echo after $x"], stdin=True, detach=True)
    seen = b""
    for event in handle.events():
        if event.kind == "stdout":
            seen += event.data
        if b"before\n" in seen:
            break
    number = handle.detach()
    assert number == handle.session
    first.close()

    second = live.client()
    try:
        listed = {s.session: s for s in second.list_sessions()}
        assert number in listed and listed[number].detached and not listed[number].attached
        attached = second.attach(number)
        assert attached.session == number and attached.pid == handle.pid and attached.dropped_bytes == 0
        stdin = attached.take_stdin()
        assert stdin is not None
        stdin.write("again\n")
        out = attached.collect()
        assert out.exit_code == 0
        assert out.stdout.endswith(b"after again\n")
    finally:
        second.close()


def test_signal_session_by_number_from_another_client(live: LiveRelay) -> None:
    owner = live.client()
    other = live.client()
    try:
        handle = owner.exec_stream(["sleep", "30"])
        number = next(s.session for s in other.list_sessions() if s.pid == handle.pid)
        other.signal_session(number, 9)
        assert handle.wait().signal == 9
        with pytest.raises(tether.UnknownSessionError) as caught:
            other.signal_session(999999, 9)
        assert caught.value.code == "unknownSession" and caught.value.suggestion
    finally:
        owner.close()
        other.close()


def test_ping_and_many_sessions_at_once(client: tether.Client) -> None:
    assert client.ping() >= 0
    handles = [client.exec_stream(["sh", "-c", "echo %d" % i]) for i in range(20)]
    assert [h.collect().stdout for h in handles] == [b"%d\n" % i for i in range(20)]


def test_connect_by_sandbox_name(live: LiveRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = tmp_path / "home" / "sandboxes" / "dev"
    sandbox.mkdir(parents=True)
    (sandbox / "relay.sock").symlink_to(live.socket_path)
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))
    with tether.connect(sandbox="dev") as c:
        assert c.exec(["echo", "named"]).stdout == b"named\n"
    with pytest.raises(tether.RelayUnreachableError) as caught:
        tether.connect(sandbox="missing", retry_budget=0)
    assert "missing" in caught.value.message and caught.value.suggestion


def test_nothing_listening_is_relay_unreachable(tmp_path: Path) -> None:
    with pytest.raises(tether.RelayUnreachableError) as caught:
        tether.connect("unix:" + str(tmp_path / "nothing.sock"), retry_budget=0)
    assert isinstance(caught.value, ConnectionRefusedError)
    assert json.loads(caught.value.to_json())["code"] == "relayUnreachable"


def test_asyncio_client(live: LiveRelay) -> None:
    import asyncio

    async def run() -> None:
        async with await aio.connect(live.address) as client:
            outputs = await asyncio.gather(*(client.exec(["sh", "-c", "echo $0", str(i)]) for i in range(5)))
            assert [o.stdout for o in outputs] == [b"%d\n" % i for i in range(5)]
            handle = await client.exec_stream(["cat"], stdin=True)
            stdin = handle.take_stdin()
            assert stdin is not None
            await stdin.write(b"async\n")
            await stdin.close()
            kinds = [event.kind async for event in handle]
            assert kinds[0] == "started" and kinds[-1] == "done"

    asyncio.run(run())


def test_the_compatibility_rules_hold_on_a_raw_connection(live: LiveRelay) -> None:
    """docs/PROTOCOL.md section 5: unknown kinds are answered with unknownKind (on id 0 for the
    control channel, with END on the id for a START), unknown keys are ignored, and a bad
    request is badPayload or a failed badArgs, each ending only its own id."""
    import asyncio
    from tether import protocol as p

    async def exchange() -> list[p.Frame]:
        reader, writer = await asyncio.open_unix_connection(live.socket_path)
        writer.write(p.frame_bytes(0, p.HELLO, p.hello("client", "raw", os.getpid())))
        writer.write(p.frame_bytes(0, 0x0F, p.empty()))
        writer.write(p.frame_bytes(7, 0x70, p.empty(), p.FLAG_START))  # no kind yet: files took 0x30
        writer.write(p.frame_bytes(8, 0x2E, p.empty(), p.FLAG_START))
        writer.write(p.frame_bytes(9, p.EXEC, p.encode_message({"cwd": "/"}), p.FLAG_START))
        writer.write(p.frame_bytes(10, p.EXEC, p.exec_request([]), p.FLAG_START))
        writer.write(p.frame_bytes(11, p.EXEC, p.encode_message({"argv": ["true"], "aKeyFromTheFuture": [1, 2]}),
                                   p.FLAG_START))
        await writer.drain()
        frames: list[p.Frame] = []
        buffered = b""
        while not any(f.id == 11 and f.end for f in frames):
            data = await asyncio.wait_for(reader.read(65536), 30)
            assert data, "the relay closed the connection"
            found, buffered = p.decode_frames(buffered + data)
            frames += found
        writer.close()
        return frames

    frames = asyncio.run(exchange())
    by_id: dict[int, list[p.Frame]] = {}
    for frame in frames:
        by_id.setdefault(frame.id, []).append(frame)
    control = [f.message()["code"] for f in by_id[0] if f.kind == p.ERROR]
    assert control == ["unknownKind"]
    for id, code in ((7, "unknownKind"), (8, "unknownKind"), (9, "badPayload")):
        assert [(f.kind_name, f.end, f.message()["code"]) for f in by_id[id]] == [("error", True, code)]
    failed = by_id[10]
    assert len(failed) == 1 and failed[0].kind == p.FAILED and failed[0].end
    assert failed[0].message()["kind"] == "badArgs"
    assert [f.kind_name for f in by_id[11]] == ["started", "exited", "done"]


def test_a_client_reconnects_after_the_relay_restarted(live: LiveRelay) -> None:
    client = live.client()
    try:
        running = client.exec_stream(["sleep", "30"])
        live.restart_relay()
        with pytest.raises(tether.ConnectionClosedError):
            running.wait()
        assert client.exec(["echo", "again"]).stdout == b"again\n"
    finally:
        client.close()
    with pytest.raises(tether.ConnectionClosedError):
        client.exec(["true"])
