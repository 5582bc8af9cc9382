// Reports: those still pending delivery and those abandoned; retry now.
import {ApiError, can, get, hasRoute, post} from "./api.js";
import {failed, toast} from "./app.js";
import {badge, clear, h, when} from "./dom.js";

const POLL_MS = 3000;
const STATES = ["pending", "abandoned"];

function retryButton(r, refresh) {
  if (!can("reports:manage") || r.reportId === undefined || r.reportId === null) return "";
  return h("button", {type: "button", class: "retry", onclick: async (ev) => {
    ev.target.disabled = true;
    try {
      await post(`/v1/reports/${encodeURIComponent(r.reportId)}/retry`);
      toast("Retry scheduled.");
    } catch (e) { failed(e); }
    refresh();
  }}, "Retry now");
}

export function reportsPage(main, {params}) {
  const ctl = new AbortController();
  let timer = null;
  const state = params.get("state") || STATES.join(",");
  const body = h("tbody", {id: "reports-body"});
  main.append(h("h1", null, "Reports"),
    h("p", {class: "muted"}, "Final reports not yet delivered to the orchestrator, and those " +
      "given up on after their deadline."),
    h("table", {class: "grid", id: "reports-table"},
      h("thead", null, h("tr", null, ["Job", "State", "Attempts", "Last error",
        "Last HTTP status", "Next attempt", "Created", ""].map((x) => h("th", null, x)))),
      body));

  function emptyRow(text) {
    clear(body).append(h("tr", null, h("td", {colspan: 8, class: "muted"}, text)));
  }

  async function refresh() {
    clearTimeout(timer);
    if (!(await hasRoute("/v1/reports"))) { emptyRow("This daemon does not list reports."); return; }
    try {
      const page = await get("/v1/reports?state=" + encodeURIComponent(state),
                             {signal: ctl.signal});
      const reports = page.reports || [];
      clear(body).append(...reports.map((r) => h("tr",
        {"data-report": r.reportId, "data-job": r.jobId, "data-state": r.state},
        h("td", null, r.jobId
          ? h("a", {href: "/ui/jobs/" + encodeURIComponent(r.jobId), class: "mono"}, r.jobId)
          : ""),
        h("td", null, badge(r.state)),
        h("td", null, String(r.attempts ?? "")),
        h("td", {class: "error-text"}, r.lastError || ""),
        h("td", null, r.lastStatus === null || r.lastStatus === undefined ? ""
                                                                          : String(r.lastStatus)),
        h("td", null, r.nextAttemptAt ? when(r.nextAttemptAt) : "–"),
        h("td", null, r.createdAt ? when(r.createdAt) : ""),
        h("td", null, retryButton(r, refresh)))));
      if (!reports.length) emptyRow("No pending or abandoned reports.");
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) emptyRow(e.message);
      else failed(e);
    }
    if (!ctl.signal.aborted) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { ctl.abort(); clearTimeout(timer); };
}
