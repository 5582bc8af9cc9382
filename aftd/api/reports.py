"""``/v1/reports``: the outbox's pending and abandoned reports, and retrying one now."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aftd.api.errors import ApiError, Reply
from aftd.api.paging import Page, fill_page
from aftd.api.registry import Registry, json_body
from aftd.api.requests import MAX_QUERY_DIGITS, ReportsQuery
from aftd.api.responses import ReportItem, ReportList
from aftd.api.state import LIMITS, STATE, ApiState
from aftd.api.validation import query_input, validate
from aftd.report.outbox import ReportNotRetryable, UnknownReport
from aftd.scopes import Scope

__all__ = ["routes"]

routes = Registry()


@routes.route("GET", "/v1/reports", "listReports",
              "Reports still owed (pending) or given up on (abandoned), newest first",
              {200: json_body(ReportList, "A page of reports")}, query=ReportsQuery,
              scope=Scope.JOBS_READ,
              description="A page holds at most `limit` reports and at most "
                          "`server.max_page_bytes` of JSON; `nextCursor` continues it.")
async def list_reports(request: web.Request) -> Reply:
    state = request.app[STATE]
    q = validate(ReportsQuery, query_input(request, ReportsQuery))
    page = Page(request.app[LIMITS].max_page_bytes, ReportList, "reports")
    return page.reply_after(*await _fill_page(state, q, page))


async def _fill_page(state: ApiState, q: ReportsQuery, page: Page) -> tuple[int | None, bool]:
    """Add reports to ``page``; return the last added report's id and whether more follow."""
    outbox = state.outbox
    if outbox is None:  # a daemon always has one
        return None, False

    async def item(row: dict[str, Any]) -> ReportItem:
        return ReportItem.model_validate(row)
    return await fill_page(page, q.limit, q.cursor, lambda n, cursor: outbox.reports(
        q.states, n, cursor), item, lambda row: int(row["reportId"]))


@routes.route("POST", "/v1/reports/{reportId}/retry", "retryReport",
              "Deliver a report now: an abandoned one gets a fresh deadline",
              {200: json_body(ReportItem, "The report, pending and due now")},
              errors=frozenset({404, 409}), scope=Scope.REPORTS_MANAGE)
async def retry_report(request: web.Request) -> Reply:
    state = request.app[STATE]
    raw = request.match_info["reportId"]
    if state.outbox is None or not (raw.isascii() and raw.isdigit()
                                    and len(raw) <= MAX_QUERY_DIGITS):
        raise ApiError(404, "unknown_report", f"no report with id {raw[:200]!r}")
    try:
        row = await state.outbox.retry_now(int(raw))
    except UnknownReport as exc:
        raise ApiError(404, "unknown_report", str(exc)) from None
    except ReportNotRetryable as exc:
        raise ApiError(409, "report_not_retryable", str(exc)) from None
    return Reply.of(ReportItem.model_validate(row))
