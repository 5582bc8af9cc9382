"""sd_notify against a real unix datagram socket (filesystem path and abstract namespace)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
from structlog.testing import capture_logs

from aftd.sdnotify import Notifier, watchdog_loop


@pytest.fixture
def make() -> Iterator[Callable[[Mapping[str, str]], Notifier]]:
    """Notifier.from_env, closing every notifier's socket at teardown."""
    made: list[Notifier] = []

    def build(env: Mapping[str, str]) -> Notifier:
        made.append(Notifier.from_env(env))
        return made[-1]

    yield build
    for notifier in made:
        notifier.close()


def test_unset_socket_is_a_noop(make) -> None:
    notifier = make({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


async def test_lifecycle_sequence_on_path_socket(make, notify_path) -> None:
    notifier = make(notify_path.env())
    assert notifier.enabled
    assert notifier.ready(status="running=0 queued=0")
    assert notifier.status("running=2 queued=5")
    assert notifier.reloading()
    assert notifier.ready()
    assert notifier.stopping()
    notifier.close()
    got = [await notify_path.next_message() for _ in range(5)]
    assert got[0] == {"READY": "1", "STATUS": "running=0 queued=0"}
    assert got[1] == {"STATUS": "running=2 queued=5"}
    assert got[2]["RELOADING"] == "1"
    assert set(got[2]) == {"RELOADING", "MONOTONIC_USEC"}
    assert got[3] == {"READY": "1"}
    assert got[4] == {"STOPPING": "1"}


async def test_abstract_namespace_socket(make, notify_abstract) -> None:
    notifier = make(notify_abstract.env())
    assert notifier.ready()
    assert await notify_abstract.next_message() == {"READY": "1"}


async def test_reloading_carries_current_monotonic_usec(make, notify_path) -> None:
    notifier = make(notify_path.env())
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = await notify_path.next_message()
    assert before <= int(message["MONOTONIC_USEC"]) <= after


async def test_newline_in_status_cannot_inject_a_field(make, notify_path) -> None:
    notifier = make(notify_path.env())
    notifier.status("line one\nREADY=1")
    assert await notify_path.next_message() == {"STATUS": "line one READY=1"}


def test_watchdog_interval_is_half_of_usec(make, notify_path) -> None:
    notifier = make(notify_path.env(WATCHDOG_USEC="30000000"))
    assert notifier.watchdog_interval() == 15.0


def test_watchdog_pid_of_another_process_disables_watchdog(make, notify_path) -> None:
    own = make(notify_path.env(WATCHDOG_USEC="1000000", WATCHDOG_PID=str(os.getpid())))
    other = make(notify_path.env(WATCHDOG_USEC="1000000", WATCHDOG_PID="1"))
    assert own.watchdog_interval() == 0.5
    assert other.watchdog_interval() is None


@pytest.mark.parametrize("bad", ["", "0", "-5", "soon"])
def test_bad_watchdog_usec_means_no_watchdog(make, notify_path, bad: str) -> None:
    assert make(notify_path.env(WATCHDOG_USEC=bad)).watchdog_interval() is None


def test_unsupported_socket_kind_is_disabled_with_a_warning(make) -> None:
    with capture_logs() as logs:
        notifier = make({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert [e["event"] for e in logs] == ["sd_notify_socket_unsupported"]


def test_send_failure_never_raises_and_warns_once(make, tmp_path) -> None:
    notifier = make({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with capture_logs() as logs:
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    assert [e["event"] for e in logs] == ["sd_notify_send_failed"]
    assert "nobody-listens" in logs[0]["notify_socket"]


async def test_watchdog_loop_pings_repeatedly(make, notify_path) -> None:
    notifier = make(notify_path.env(WATCHDOG_USEC="20000"))
    task = asyncio.create_task(watchdog_loop(notifier))
    try:
        for _ in range(3):
            assert await notify_path.next_message() == {"WATCHDOG": "1"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_returns_without_watchdog(make, notify_path) -> None:
    await asyncio.wait_for(watchdog_loop(make(notify_path.env())), 5)
    assert notify_path.drain() == []


async def test_stalled_event_loop_sends_no_pings(make, notify_path) -> None:
    notifier = make(notify_path.env(WATCHDOG_USEC="20000"))
    task = asyncio.create_task(watchdog_loop(notifier))
    try:
        await notify_path.next_message()
        notify_path.drain()
        time.sleep(0.2)  # blocking the loop on purpose: that is the stall
        assert notify_path.drain() == []
        # Once the loop runs again, so do the pings.
        assert await notify_path.next_message() == {"WATCHDOG": "1"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_unhealthy_withholds_pings_until_healthy_again(make, notify_path) -> None:
    notifier = make(notify_path.env(WATCHDOG_USEC="20000"))
    checks = 0
    recovered = asyncio.Event()

    def is_healthy() -> bool:
        nonlocal checks
        checks += 1
        if checks == 3:
            raise RuntimeError("probe blew up")  # counts as unhealthy
        if checks >= 5:
            recovered.set()
            return True
        return False

    with capture_logs() as logs:
        task = asyncio.create_task(watchdog_loop(notifier, is_healthy))
        try:
            await asyncio.wait_for(recovered.wait(), 10)
            # Checks 1-4 were unhealthy and sent nothing; check 5 sent the first ping.
            assert await notify_path.next_message() == {"WATCHDOG": "1"}
            assert all(m == {"WATCHDOG": "1"} for m in notify_path.drain())
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    events = [e["event"] for e in logs]
    assert events.count("watchdog_withheld") == 1
    assert "watchdog_health_check_failed" in events
    assert "watchdog_resumed" in events


async def test_from_env_reads_the_process_environment(notify_path) -> None:
    # As under systemd: the variables arrive in the real environment of a fresh process.
    code = (
        "import os; from aftd.sdnotify import Notifier; n = Notifier.from_env(); "
        "n.ready(status=f'interval={n.watchdog_interval()}'); n.close()"
    )
    env = {**os.environ, **notify_path.env(WATCHDOG_USEC="4000000")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert await notify_path.next_message() == {"READY": "1", "STATUS": "interval=2.0"}
