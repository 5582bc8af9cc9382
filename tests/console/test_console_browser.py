"""The operator console in a real browser (headless Chromium driven by Playwright) against the
real daemon and a real orchestrator: sign-in and its cookie, live job status and log, cancel,
trigger from the form, a pending report and its retry, escaping, scopes, CSRF, headers.

One daemon, one orchestrator and one browser serve the module (about 40 s here); every test has
a fresh browser context, so its own cookies. Screenshots of every page are saved under the run's
tmp path (``shots``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.console.conftest import API_KEY, READER_KEY
from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.orchestrator import Orchestrator

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow,
              pytest.mark.timeout(180)]

XSS = "<img src=x onerror=alert(1)>"
WAIT_MS = 30_000
Shots = Callable[[Any, str], Awaitable[Path]]


@pytest_asyncio.fixture(loop_scope="module")
async def api(daemon: DaemonProcess) -> AsyncIterator[Api]:
    client = Api(daemon)
    yield client
    await client.close()


class Console:
    """A signed-in browser context, with what the page showed: dialogs and CSP reports."""

    def __init__(self, page: Page, daemon: DaemonProcess) -> None:
        self.page = page
        self.daemon = daemon
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def _console(self, msg: Any) -> None:
        if "Content Security Policy" in msg.text:
            self.errors.append(msg.text)

    async def goto(self, path: str) -> Any:
        return await self.page.goto(self.daemon.url + path)

    async def fetch(self, method: str, path: str, headers: dict[str, str] | None = None,
                    body: Any = None) -> tuple[int, Any]:
        """A same-origin fetch from the page's own JavaScript (the cookie goes with it)."""
        result = await self.page.evaluate(
            """async ([method, path, headers, body]) => {
                const r = await fetch(path, {method, headers,
                    body: body === null ? undefined : JSON.stringify(body)});
                return [r.status, await r.text()];
            }""", [method, path, headers or {}, body])
        status, text = result
        return status, json.loads(text) if text else None

    async def csrf(self) -> str:
        status, session = await self.fetch("GET", "/v1/session")
        assert status == 200, session
        return str(session["csrfToken"])


@pytest_asyncio.fixture(loop_scope="module")
async def open_console(browser: Browser, daemon: DaemonProcess
                       ) -> AsyncIterator[Callable[..., Awaitable[Console]]]:
    contexts = []

    async def open_(key: str | None = API_KEY) -> Console:
        ctx = await browser.new_context(ignore_https_errors=True,
                                        viewport={"width": 1280, "height": 860})
        ctx.set_default_timeout(WAIT_MS)
        contexts.append(ctx)
        console = Console(await ctx.new_page(), daemon)
        await console.goto("/ui/")
        if key is not None:
            await console.page.fill("#api-key", key)
            await console.page.click("#signin-form button[type=submit]")
            await expect(console.page.locator("#jobs-table")).to_be_visible(timeout=WAIT_MS)
        return console

    yield open_
    for ctx in contexts:
        await ctx.close()


async def _start(api: Api, script: str, params: dict[str, Any]) -> str:
    status, job = await api.trigger(script, params)
    assert status == 201, job
    return str(job["jobId"])


def _row(page: Page, job_id: str) -> Any:
    return page.locator(f'#jobs-body tr[data-job="{job_id}"]')


# -- sign-in, cookie, headers -------------------------------------------------------------------

async def test_sign_in_gives_a_strict_http_only_session_cookie_and_sign_out_ends_it(
        open_console: Callable[..., Awaitable[Console]], daemon: DaemonProcess,
        shots: Shots) -> None:
    console = await open_console(key=None)
    page = console.page
    await expect(page.locator("#signin-form")).to_be_visible()
    await shots(page, "signin")
    await page.fill("#api-key", "not-a-key")
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("#signin-error")).to_have_text("invalid API key")
    before = time.time()
    await page.fill("#api-key", API_KEY)
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("#who-name")).to_have_text("operator")

    [cookie] = await page.context.cookies()
    assert cookie["name"] == "__Host-aftd_session"
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (
        True, True, "Strict", "/")
    assert before + 11 * 3600 < cookie["expires"] < before + 13 * 3600  # 12 h by default
    assert cookie["value"] not in await page.evaluate("document.cookie")
    assert API_KEY not in await page.content()
    # The daemon keeps no token: not on disk, not in its log.
    state = b"".join(p.read_bytes() for p in daemon.state_dir.rglob("*") if p.is_file())
    assert cookie["value"].encode() not in state and cookie["value"] not in daemon.logs()

    await page.click("#sign-out")
    await expect(page.locator("#signin-form")).to_be_visible()
    assert await page.context.cookies() == []
    # The old token is dead even if someone kept it.
    await page.context.add_cookies([{**cookie}])
    status, body = await console.fetch("GET", "/v1/jobs")
    assert (status, body["error"]["code"]) == (401, "unauthorized"), body


async def test_every_response_carries_the_security_headers(
        open_console: Callable[..., Awaitable[Console]]) -> None:
    console = await open_console()
    page = console.page
    responses = [await console.goto("/ui/jobs"), await console.goto("/ui/static/app.js"),
                 await page.request.get(console.daemon.url + "/v1/jobs"),
                 await page.request.get(console.daemon.url + "/v1/nope")]
    for resp in responses:
        headers = resp.headers
        csp = headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'", csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    # No inline script or handler for the policy to have to allow.
    html = (await (await console.goto("/ui/")).text())
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert console.errors == []


# -- jobs, live -------------------------------------------------------------------------------

async def test_a_job_goes_running_then_succeeded_on_the_jobs_page_without_reload(
        open_console: Callable[..., Awaitable[Console]], api: Api, tmp_path: Path,
        shots: Shots) -> None:
    console = await open_console()
    page = console.page
    await page.evaluate("window.notReloaded = true")
    gate = tmp_path / "gate"
    job_id = await _start(api, "ticker", {"gate": str(gate)})
    row = _row(page, job_id)
    await expect(row).to_have_attribute("data-status", "running")
    await expect(row.locator(".status")).to_have_text("running")
    await shots(page, "jobs")
    gate.touch()
    await expect(row).to_have_attribute("data-status", "succeeded")
    assert await page.evaluate("window.notReloaded") is True
    # Filters narrow the list (and are kept in the address).
    await page.select_option("#filter-status", "failed")
    await expect(row).to_have_count(0)
    assert "status=failed" in page.url
    await page.select_option("#filter-status", "succeeded")
    await page.select_option("#filter-script", "ticker")
    await expect(row).to_have_count(1)
    assert console.errors == []


async def test_the_job_page_follows_the_log_live_and_shows_the_outcome(
        open_console: Callable[..., Awaitable[Console]], api: Api, tmp_path: Path,
        shots: Shots) -> None:
    console = await open_console()
    page = console.page
    gate = tmp_path / "gate"
    job_id = await _start(api, "ticker", {"gate": str(gate)})
    await api.wait_job(job_id, ("running",))
    await console.goto(f"/ui/jobs/{job_id}")
    await expect(page.locator("#job-status")).to_have_text("running")
    await expect(page.locator("#log-state")).to_have_text("following live")
    ticks = page.locator("#job-log .log-line", has_text="tick")
    await expect(ticks.first).to_be_visible()
    seen = await ticks.count()
    # New lines arrive while the page is open (no reload).
    await expect(page.locator("#job-log .log-line", has_text=f"n={seen + 3}")).to_be_visible()
    await shots(page, "job-running")
    gate.touch()
    await expect(page.locator("#job-status")).to_have_text("succeeded")
    await expect(page.locator("#job-log .log-line", has_text="gate_opened")).to_be_visible()
    await expect(page.locator("#log-state")).to_have_text("complete")
    await expect(page.locator("#details")).to_contain_text("Exit code0")
    assert console.errors == []


async def test_the_jobs_list_pages_through_older_jobs(
        open_console: Callable[..., Awaitable[Console]], api: Api) -> None:
    ids = [await _start(api, "hello", {"name": f"page-{i}"}) for i in range(30)]
    await api.wait_job(ids[-1])
    console = await open_console()
    page = console.page
    await page.select_option("#filter-script", "hello")
    rows = page.locator("#jobs-body tr[data-job]")
    await expect(rows).to_have_count(25)
    assert await rows.first.get_attribute("data-job") == ids[-1]  # newest first
    first_page = set(await rows.evaluate_all("rs => rs.map(r => r.dataset.job)"))
    await expect(page.locator("#newer")).to_be_disabled()
    await page.click("#older")
    await expect(page.locator(".pager")).to_contain_text("page 2")
    await expect(rows.first).not_to_have_attribute("data-job", ids[-1])
    second_page = set(await rows.evaluate_all("rs => rs.map(r => r.dataset.job)"))
    assert second_page and not first_page & second_page
    assert set(ids) <= first_page | second_page
    await page.click("#newer")
    await expect(rows.first).to_have_attribute("data-job", ids[-1])


async def test_a_secret_a_job_logged_is_masked_in_the_console(
        open_console: Callable[..., Awaitable[Console]], api: Api, orch: Orchestrator) -> None:
    job_id = await _start(api, "leaky", {})
    assert (await api.wait_job(job_id))["status"] == "succeeded"
    console = await open_console()
    await console.goto(f"/ui/jobs/{job_id}")
    log = console.page.locator("#job-log")
    await expect(log).to_contain_text("token=***")
    assert orch.token not in await console.page.content()


async def test_cancel_a_running_job_from_its_page(
        open_console: Callable[..., Awaitable[Console]], api: Api, tmp_path: Path) -> None:
    console = await open_console()
    page = console.page
    job_id = await _start(api, "ticker", {"gate": str(tmp_path / "never")})
    await console.goto(f"/ui/jobs/{job_id}")
    await expect(page.locator("#job-status")).to_have_text("running")
    await page.click("#cancel-job")
    await expect(page.locator("#job-status")).to_have_text("cancelled")
    await expect(page.locator("#cancel-job")).to_have_count(0)
    assert (await api.job(job_id))["status"] == "cancelled"


async def test_trigger_a_script_from_the_form_and_run_it_again(
        open_console: Callable[..., Awaitable[Console]], api: Api, shots: Shots) -> None:
    console = await open_console()
    page = console.page
    await page.click('#nav a[data-page="scripts"]')
    await page.click('section.script[data-script="hello"] details.run summary')
    form = page.locator('form.run-form[data-script="hello"]')
    await form.locator(".param-name").fill("name")
    await form.locator(".param-value").fill("from the form")
    await shots(page, "scripts")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#job-status")).to_have_text("succeeded")
    job_id = page.url.rsplit("/", 1)[1]
    job = await api.job(job_id)
    assert (job["scriptId"], job["params"]) == ("hello", {"name": "from the form"})
    await expect(page.locator("#params")).to_contain_text("from the form")
    await page.click("#run-again")
    await expect(page).not_to_have_url(re.compile(re.escape(job_id) + "$"))
    again = page.url.rsplit("/", 1)[1]
    assert (await api.wait_job(again))["params"] == {"name": "from the form"}


async def test_a_script_param_with_markup_is_shown_as_text(
        open_console: Callable[..., Awaitable[Console]], api: Api, shots: Shots) -> None:
    job_id = await _start(api, "hello", {"name": XSS, XSS.replace("<", "").split()[0]: XSS})
    await api.wait_job(job_id)
    console = await open_console()
    page = console.page
    await console.goto(f"/ui/jobs/{job_id}")
    cells = page.locator("#params td", has_text=XSS)
    await expect(cells).to_have_count(2)
    await expect(page.locator("#job-log")).to_contain_text(f"name={XSS}")
    assert await page.locator("main img").count() == 0
    await shots(page, "job-escaped")
    assert console.dialogs == [] and console.errors == []


# -- reports ------------------------------------------------------------------------------------

async def test_a_report_pending_while_the_orchestrator_is_down_and_retry_now(
        open_console: Callable[..., Awaitable[Console]], api: Api, orch: Orchestrator,
        src_dir: Path, tmp_path: Path, shots: Shots) -> None:
    orch.add_job("console-1")
    (src_dir / "console-1.dat").write_bytes(b"x" * (3 << 20))
    gate = tmp_path / "gate"
    job_id = await _start(api, "gated", {"job_id": "console-1", "gate": str(gate)})
    deadline = time.monotonic() + 30
    while orch.claims("console-1") == 0:  # claimed: the report will be owed
        assert time.monotonic() < deadline, await api.job(job_id)
        await asyncio.sleep(0.05)
    await orch.go_down()
    try:
        gate.touch()
        job = await api.wait_job(job_id)
        assert job["status"] == "succeeded", job
        console = await open_console()
        page = console.page
        await console.goto(f"/ui/jobs/{job_id}")
        await expect(page.locator("#report")).to_contain_text("pending")
        await expect(page.locator("#retry-report")).to_be_visible()
        await expect(page.locator("#progress")).to_contain_text("3.00 MiB of 3.00 MiB")
        await expect(page.locator("#progress")).to_contain_text("1 of 1")
        await shots(page, "job")
        await page.click('#nav a[data-page="reports"]')
        row = page.locator(f'#reports-body tr[data-job="{job_id}"]')
        await expect(row).to_contain_text("pending")
        await expect(row.locator("td").nth(3)).not_to_be_empty()  # the connection error
        await shots(page, "reports")
    finally:
        await orch.come_back()
    await row.locator("button.retry").click()
    await orch.wait_reports("console-1")
    await expect(row).to_have_count(0)
    await console.goto(f"/ui/jobs/{job_id}")
    await expect(page.locator("#report")).to_contain_text("delivered")


async def test_health_shows_counts_and_the_last_hours_throughput(
        open_console: Callable[..., Awaitable[Console]], api: Api, shots: Shots) -> None:
    status, series = await api.request("GET", "/v1/stats/throughput")
    assert status == 200 and series["bucketSeconds"] == 60 and len(series["buckets"]) == 60
    console = await open_console()
    page = console.page
    await page.click('#nav a[data-page="health"]')
    await expect(page.locator("#h-status .tile-value")).to_have_text("ok")
    await expect(page.locator("#h-version .tile-value")).not_to_be_empty()
    await expect(page.locator("#throughput-chart rect.bar")).to_have_count(60)
    total = series["totalBytes"]
    if total:  # the report test copied a file this hour: its bar is drawn
        tall = await page.locator("#throughput-chart rect.bar").evaluate_all(
            "bars => bars.filter(b => Number(b.getAttribute('height')) > 0).length")
        assert tall >= 1
    await shots(page, "health")


async def test_the_triggers_page_shows_the_real_triggers_and_pauses_resumes_and_runs_them(
        open_console: Callable[..., Awaitable[Console]], api: Api, drop_dir: Path,
        shots: Shots) -> None:
    console = await open_console()
    page = console.page
    await page.click('#nav a[data-page="triggers"]')
    leap = page.locator('#triggers-body tr[data-trigger="leapday"]')
    drop = page.locator('#triggers-body tr[data-trigger="dropbox"]')
    await expect(leap).to_have_attribute("data-state", "active")
    await expect(leap).to_contain_text("cron 0 0 29 2 * (Asia/Kathmandu)")
    await expect(drop).to_contain_text("drop:in *.csv")
    # Next fire: midnight of a 29th of February in Kathmandu (UTC+5:45) is 18:15 UTC the day before.
    await expect(leap.locator("td").nth(5)).to_have_attribute(
        "title", re.compile(r"^\d{4}-02-28T18:15:00(\.000)?Z$"))

    await leap.locator("button.pause").click()
    await expect(leap).to_have_attribute("data-state", "paused")
    assert (await api.request("GET", "/v1/triggers/leapday"))[1]["state"] == "paused"
    await leap.locator("button.resume").click()
    await expect(leap).to_have_attribute("data-state", "active")

    await leap.locator("button.run").click()
    await expect(page.locator("#toast")).to_contain_text("leapday: submitted (job ")
    job_id = re.search(r"job ([^)]+)\)", await page.locator("#toast").inner_text())
    assert job_id is not None
    job = await api.wait_job(job_id.group(1))
    assert job["trigger"] == "leapday" and job["status"] == "succeeded"

    (drop_dir / "orders.csv").write_text("a,b\n")
    await expect(drop.locator("td").nth(6)).to_contain_text("ago", timeout=WAIT_MS)
    await shots(page, "triggers")
    await drop.locator("td a").click()  # the trigger's jobs
    await expect(page.locator("#filter-trigger")).to_have_value("dropbox")
    await expect(page.locator("#jobs-body tr[data-job]")).to_have_count(1)
    assert not console.errors, console.errors


async def test_a_failing_trigger_shows_its_state_and_last_error_as_text(
        open_console: Callable[..., Awaitable[Console]], api: Api) -> None:
    console = await open_console()
    page = console.page
    await page.click('#nav a[data-page="triggers"]')
    lost = page.locator('#triggers-body tr[data-trigger="lost"]')
    await expect(lost).to_have_attribute("data-state", "error")
    _, st = await api.request("GET", "/v1/triggers/lost")
    assert st["state"] == "error" and "<i>gone</i>" in st["lastError"], st
    cell = lost.locator("td.error-text")
    await expect(cell).to_contain_text("<i>gone</i>")  # the characters, not italics
    assert await cell.locator("i").count() == 0
    assert not console.dialogs and not console.errors, (console.dialogs, console.errors)


# -- scopes and CSRF ----------------------------------------------------------------------------

async def test_a_read_only_key_sees_no_actions_and_is_refused_if_it_posts(
        open_console: Callable[..., Awaitable[Console]], api: Api, tmp_path: Path,
        shots: Shots) -> None:
    job_id = await _start(api, "ticker", {"gate": str(tmp_path / "gate")})
    try:
        console = await open_console(READER_KEY)
        page = console.page
        await expect(page.locator("#who-name")).to_have_text("reader")
        await console.goto(f"/ui/jobs/{job_id}")
        await expect(page.locator("#job-status")).to_have_text("running")
        await expect(page.locator("#job-actions")).to_be_attached()
        assert await page.locator("#cancel-job").count() == 0
        assert await page.locator("#run-again").count() == 0
        await shots(page, "job-read-only")
        await page.click('#nav a[data-page="scripts"]')
        await expect(page.locator('section.script[data-script="hello"]')).to_be_visible()
        assert await page.locator("form.run-form").count() == 0
        await page.click('#nav a[data-page="triggers"]')
        await expect(page.locator('#triggers-body tr[data-trigger="leapday"]')).to_be_visible()
        assert await page.locator("#triggers-body button").count() == 0
        token = await console.csrf()
        status, body = await console.fetch("POST", f"/v1/jobs/{job_id}/cancel",
                                           {"X-CSRF-Token": token})
        assert status == 403 and "jobs:cancel" in body["error"]["message"], body
        assert (await api.job(job_id))["status"] == "running"
    finally:
        (tmp_path / "gate").touch()


async def test_a_change_without_the_csrf_token_is_refused(
        open_console: Callable[..., Awaitable[Console]], api: Api, tmp_path: Path) -> None:
    job_id = await _start(api, "ticker", {"gate": str(tmp_path / "gate")})
    try:
        console = await open_console()
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            status, body = await console.fetch("POST", f"/v1/jobs/{job_id}/cancel", headers)
            assert (status, body["error"]["code"]) == (403, "csrf_failed"), body
            status, body = await console.fetch("POST", "/v1/jobs", headers,
                                               {"scriptId": "hello"})
            assert (status, body["error"]["code"]) == (403, "csrf_failed"), body
            status, body = await console.fetch("DELETE", "/v1/session", headers)
            assert (status, body["error"]["code"]) == (403, "csrf_failed"), body
        assert (await api.job(job_id))["status"] == "running"
        # Reads need no token, and with it the same change goes through.
        assert (await console.fetch("GET", f"/v1/jobs/{job_id}"))[0] == 200
        status, body = await console.fetch("POST", f"/v1/jobs/{job_id}/cancel",
                                           {"X-CSRF-Token": await console.csrf()})
        assert (status, body["status"]) == (200, "cancelled"), body
    finally:
        (tmp_path / "gate").touch()
