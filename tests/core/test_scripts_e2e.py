"""Script behaviour inside the daemon: exit codes, exceptions, broken imports, reloads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fixtures.daemon import Api, DaemonProcess, start_sync

SCRIPTS = {
    "boom": '''
async def main(job):
    job.log.info("about_to_fail")
    raise ValueError("disk on fire")
''',
    "exits": '''
async def main(job):
    job.exit(int(job.params["code"]))
''',
    "needs": '''
async def main(job):
    return len(job.params["job_id"])
''',
    "broken": "def main(:\n",
    "notasync": "def main(job):\n    return 0\n",
    "importerr": "import does_not_exist_anywhere\nasync def main(job):\n    return 0\n",
    "secret_env": '''
async def main(job):
    value = await job.secret("demo-token")
    job.log.info("got", length=len(value), echo=value)
    raise RuntimeError("failed with " + value)
''',
}


@pytest.fixture(scope="module")
def scripts_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon serving SCRIPTS for the module (a test that edits a script starts its own)."""
    d = DaemonProcess(tmp_path_factory.mktemp("scripts-e2e"), scripts=SCRIPTS)
    start_sync(d)
    yield d
    d.stop()


@pytest.fixture
async def sapi(scripts_daemon: DaemonProcess) -> AsyncIterator[Api]:
    """An API client for a daemon serving SCRIPTS."""
    api = Api(scripts_daemon)
    yield api
    await api.close()


async def _run(api: Api, script: str, params: object = None) -> dict:  # type: ignore[type-arg]
    status, body = await api.trigger(script, params)
    assert status == 201, body
    return await api.wait_job(body["jobId"])


async def test_exception_fails_job_with_message_and_traceback(sapi: Api) -> None:
    api = sapi
    job = await _run(api, "boom")
    assert job["status"] == "failed"
    assert job["error"] == "ValueError: disk on fire"
    _, log = await api.request("GET", f"/v1/jobs/{job['jobId']}/log")
    exc = next(line for line in log["lines"] if line["event"] == "job_exception")
    assert "Traceback" in exc["traceback"]
    assert "disk on fire" in exc["traceback"]


async def test_exit_codes(sapi: Api) -> None:
    api = sapi
    ok = await _run(api, "exits", {"code": 0})
    assert (ok["status"], ok["exitCode"]) == ("succeeded", 0)
    bad = await _run(api, "exits", {"code": 3})
    assert (bad["status"], bad["exitCode"]) == ("failed", 3)


async def test_missing_param_is_named(sapi: Api) -> None:
    api = sapi
    job = await _run(api, "needs")
    assert job["status"] == "failed"
    assert "job_id" in job["error"]


async def test_broken_scripts_fail_their_job_only(sapi: Api) -> None:
    api = sapi
    for name, needle in (("broken", "SyntaxError"), ("notasync", "async def main"),
                         ("importerr", "does_not_exist_anywhere")):
        job = await _run(api, name)
        assert job["status"] == "failed", name
        assert needle in job["error"], job["error"]
    assert (await _run(api, "exits", {"code": 0}))["status"] == "succeeded"


async def test_edited_script_takes_effect_without_restart(make_daemon) -> None:  # type: ignore[no-untyped-def]
    api = Api(await make_daemon(scripts=SCRIPTS))  # its own: it edits a script
    try:
        assert (await _run(api, "exits", {"code": 0}))["status"] == "succeeded"
        api.daemon.write_script("exits", "async def main(job):\n    return 7\n")
        job = await _run(api, "exits", {"code": 0})
        assert (job["status"], job["exitCode"]) == ("failed", 7)
        api.daemon.write_script("brand_new", "async def main(job):\n    return 0\n")
        assert (await _run(api, "brand_new"))["status"] == "succeeded"
    finally:
        await api.close()


async def test_env_secret_is_resolved_and_never_shown(make_daemon) -> None:  # type: ignore[no-untyped-def]
    secret = "s3cr3t-Value-for-redaction"
    d: DaemonProcess = await make_daemon(scripts=SCRIPTS,
                                         env={"AFTD_SECRET_DEMO_TOKEN": secret})
    api = Api(d)
    try:
        job = await _run(api, "secret_env")
        assert job["status"] == "failed"
        assert "failed with" in job["error"]
        _, log = await api.request("GET", f"/v1/jobs/{job['jobId']}/log")
        got = next(line for line in log["lines"] if line["event"] == "got")
        assert got["length"] == len(secret)
        for text in (str(job), str(log)):
            assert secret not in text
    finally:
        await api.close()
    d.stop()
    assert secret not in d.logs()
