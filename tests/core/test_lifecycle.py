"""Start-up, graceful shutdown, kill -9 and restart of the real daemon process."""

from __future__ import annotations

import asyncio
import signal
import stat

from tests.fixtures.daemon import Api, DaemonProcess

SLOW = '''
import asyncio
async def main(job):
    await asyncio.sleep(float(job.params.get("sleep", 60)))
'''


async def test_sigterm_lets_running_job_finish_and_refuses_new_ones(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"slow": SLOW})
    api = Api(d)
    try:
        _, job = await api.trigger("slow", {"sleep": "2"})
        await api.wait_job(job["jobId"], ("running",))
        d.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        status, err = await api.trigger("slow", {"sleep": "1"})
        assert status == 503
        assert err["error"]["code"] == "draining"
        assert await d.wait_exit() == 0
    finally:
        await api.close()
    await d.start()
    api = Api(d)
    try:
        assert (await api.job(job["jobId"]))["status"] == "succeeded"
    finally:
        await api.close()


async def test_sigterm_past_grace_interrupts_the_job(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"slow": SLOW},
                                         extra_config="[jobs]\nshutdown_grace_s = 0.5\n")
    api = Api(d)
    _, job = await api.trigger("slow")
    await api.wait_job(job["jobId"], ("running",))
    await api.close()
    d.signal(signal.SIGTERM)
    assert await d.wait_exit() == 0
    await d.start()
    api = Api(d)
    try:
        final = await api.job(job["jobId"])
        assert final["status"] == "interrupted"
        assert "shut down" in final["error"]
    finally:
        await api.close()


async def test_kill9_then_restart_marks_running_job_interrupted(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"slow": SLOW},
                                         extra_config="[jobs]\nmax_concurrent = 1\n")
    api = Api(d)
    _, running = await api.trigger("slow")
    _, queued = await api.trigger("slow", {"sleep": "0"})
    await api.wait_job(running["jobId"], ("running",))
    await api.close()
    d.kill9()
    await d.start()
    api = Api(d)
    try:
        assert (await api.job(running["jobId"]))["status"] == "interrupted"
        # The job that was only queued was accepted: it runs after the restart.
        assert (await api.wait_job(queued["jobId"]))["status"] == "succeeded"
    finally:
        await api.close()


async def test_generated_cert_and_key_are_reused(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon()
    key_file = d.state_dir / "tls" / "key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cert_before = d.cert.read_bytes()
    d.stop()
    await d.start()
    assert d.cert.read_bytes() == cert_before


async def test_second_signal_forces_exit(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"slow": SLOW})
    api = Api(d)
    _, job = await api.trigger("slow")
    await api.wait_job(job["jobId"], ("running",))
    await api.close()
    d.signal(signal.SIGTERM)
    # Two signals before the daemon handled the first are one signal: wait until it had.
    await d.wait_for_log('"shutdown_requested"')
    d.signal(signal.SIGTERM)
    # Well before the 30 s grace: the second signal does not wait for the job.
    assert await d.wait_exit(timeout=20) != 0
