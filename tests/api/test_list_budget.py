"""List pages stay within ``server.max_page_bytes`` however many large jobs there are."""

from __future__ import annotations

import asyncio
import json

from tests.api.rawclient import assert_no_traceback
from tests.fixtures.daemon import Api, DaemonProcess

BUDGET = 65536  # max_page_bytes of the hostile daemon
JOBS = 300


async def _get_raw(api: Api, path: str) -> bytes:
    async with api.session.get(api.daemon.url + path, headers=api.headers(),
                               ssl=api.daemon.ssl_context()) as r:
        assert r.status == 200, await r.text()
        return await r.read()


async def _trigger_many(api: Api, tag: str) -> set[str]:
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        async with sem:
            params = {"tag": tag, "i": i, "pad": "p" * 4000}  # near max_params_bytes (4096)
            status, job = await api.trigger("hello", params)
            assert status == 201, job
            return str(job["jobId"])

    return set(await asyncio.gather(*(one(i) for i in range(JOBS))))


async def test_list_pages_within_the_byte_budget(hostile: DaemonProcess) -> None:
    api = Api(hostile)
    try:
        ids = await _trigger_many(api, "budget")
        # Without params: rows are small, one page holds every job asked for.
        raw = await _get_raw(api, "/v1/jobs?limit=1000")
        page = json.loads(raw)
        assert len(raw) <= BUDGET
        assert all("params" not in j for j in page["jobs"])
        assert ids <= {j["jobId"] for j in page["jobs"]} or page["nextCursor"]

        # With params: the budget ends each page early, the cursor continues it.
        seen: list[str] = []
        path = "/v1/jobs?limit=1000&params=true"
        pages = 0
        while True:
            raw = await _get_raw(api, path)
            page = json.loads(raw)
            pages += 1
            assert len(raw) <= BUDGET, len(raw)
            assert page["jobs"], page
            for j in page["jobs"]:
                seen.append(j["jobId"])
                if j["jobId"] in ids:
                    assert j["params"]["pad"] == "p" * 4000
            if page["nextCursor"] is None:
                break
            path = f"/v1/jobs?limit=1000&params=true&cursor={page['nextCursor']}"
        assert len(seen) == len(set(seen)), "a job appeared on two pages"
        assert ids <= set(seen)
        assert pages >= JOBS * 4000 // BUDGET

        # One job is always complete.
        one = await api.job(next(iter(ids)))
        assert one["params"]["pad"] == "p" * 4000
    finally:
        await api.close()
    assert_no_traceback(hostile)


async def test_limit_still_bounds_a_page(hostile: DaemonProcess) -> None:
    api = Api(hostile)
    try:
        for _ in range(3):
            assert (await api.trigger("hello"))[0] == 201
        status, page = await api.request("GET", "/v1/jobs?limit=2&params=true")
        assert status == 200 and len(page["jobs"]) == 2 and page["nextCursor"]
        status, nxt = await api.request("GET", f"/v1/jobs?limit=2&cursor={page['nextCursor']}")
        assert status == 200
        assert not {j["jobId"] for j in page["jobs"]} & {j["jobId"] for j in nxt["jobs"]}
    finally:
        await api.close()


async def test_log_pages_within_the_byte_budget(hostile: DaemonProcess) -> None:
    hostile.write_script("chatty", '''
async def main(job):
    for i in range(400):
        job.log.info("line", i=i, pad="q" * 500)
''')
    api = Api(hostile)
    try:
        status, job = await api.trigger("chatty")
        assert status == 201, job
        done = await api.wait_job(job["jobId"])
        assert done["status"] == "succeeded", done
        after, got, pages = 0, [], 0
        while True:
            raw = await _get_raw(api, f"/v1/jobs/{job['jobId']}/log?after={after}")
            page = json.loads(raw)
            pages += 1
            assert len(raw) <= BUDGET
            got += [ln["i"] for ln in page["lines"] if ln.get("event") == "line"]
            if page["nextAfter"] is None:
                break
            after = page["nextAfter"]
        assert got == list(range(400))
        assert pages > 1
    finally:
        await api.close()
