// One job: its record, a progress bar, the report's delivery, the log following live, and the
// actions the signed-in key may take (cancel, run again).
import {ApiError, can, get, mayTrigger, post, scriptList} from "./api.js";
import {failed, navigate, toast} from "./app.js";
import {
  badge, between, bytes, clear, duration, field, h, rate, shown, when,
} from "./dom.js";

const ACTIVE = new Set(["queued", "running"]);
const POLL_ACTIVE_MS = 1000;
const POLL_DONE_MS = 5000;

function progressView(job) {
  const p = job.progress || {};
  const attrs = {id: "job-progress", max: String(p.bytesTotal || 1)};
  if (p.bytesTotal) attrs.value = String(Math.min(p.bytesDone, p.bytesTotal));
  else if (!ACTIVE.has(job.status)) attrs.value = job.status === "succeeded" ? "1" : "0";
  // (no value while an active job has announced no total: an indeterminate bar)
  const bar = h("progress", attrs);
  const pct = p.bytesTotal ? Math.min(100, 100 * p.bytesDone / p.bytesTotal) : null;
  const left = p.bytesTotal ? p.bytesTotal - p.bytesDone : null;
  const eta = job.status === "running" && left > 0 && p.bytesPerSecond > 0
    ? duration(left / p.bytesPerSecond) : "–";
  return h("section", {class: "card", id: "progress"},
    h("h2", null, "Progress"), bar,
    h("dl", {class: "facts inline"},
      field("Bytes", bytes(p.bytesDone) + (p.bytesTotal ? " of " + bytes(p.bytesTotal) : "") +
            (pct === null ? "" : ` (${pct.toFixed(1)}%)`)),
      field("Files", `${p.filesDone || 0}` + (p.filesTotal ? ` of ${p.filesTotal}` : "")),
      field("Rate", rate(p.bytesPerSecond)),
      field("ETA", eta)));
}

function reportView(job) {
  const r = job.report;
  const section = h("section", {class: "card", id: "report"}, h("h2", null, "Report"));
  if (r === undefined) {
    section.append(h("p", {class: "muted"}, "This daemon does not deliver reports."));
  } else if (r === null) {
    section.append(h("p", {class: "muted"}, "This job has no report to deliver."));
  } else {
    section.append(h("dl", {class: "facts"},
      field("State", badge(r.state)),
      field("Attempts", String(r.attempts)),
      field("Last error", r.lastError),
      field("Last HTTP status", r.lastStatus === null ? null : String(r.lastStatus)),
      field("Next attempt", r.nextAttemptAt ? when(r.nextAttemptAt) : null),
      field("Delivered", r.deliveredAt ? when(r.deliveredAt) : null),
      field("Idempotency-Key", r.idempotencyKey)));
    if (can("reports:manage") && r.reportId !== undefined &&
        (r.state === "pending" || r.state === "abandoned")) {
      section.append(h("button", {type: "button", id: "retry-report", onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await post(`/v1/reports/${encodeURIComponent(r.reportId)}/retry`);
          toast("Retry scheduled.");
        } catch (e) { failed(e); ev.target.disabled = false; }
      }}, "Retry now"));
    }
  }
  return section;
}

function paramsView(job) {
  const entries = Object.entries(job.params || {});
  return h("section", {class: "card", id: "params"}, h("h2", null, "Params"),
    entries.length
      ? h("table", {class: "grid compact"},
          h("thead", null, h("tr", null, h("th", null, "Name"), h("th", null, "Value"))),
          h("tbody", null, entries.map(([k, v]) =>
            h("tr", null, h("td", {class: "mono name"}, k),
              h("td", {class: "mono"}, shown(v))))))
      : h("p", {class: "muted"}, "No params."));
}

function detailsView(job) {
  return h("section", {class: "card", id: "details"}, h("h2", null, "Job"),
    h("dl", {class: "facts"},
      field("Script", job.scriptId),
      job.trigger ? field("Trigger", job.trigger) : null,
      field("Status", badge(job.status)),
      field("Created", when(job.createdAt)),
      field("Started", job.startedAt ? when(job.startedAt) : null),
      field("Finished", job.finishedAt ? when(job.finishedAt) : null),
      field("Duration", duration(between(job.startedAt, job.finishedAt))),
      field("Exit code", job.exitCode === null ? null : String(job.exitCode)),
      field("Error", job.error ? h("span", {class: "error-text", id: "job-error"}, job.error)
                               : null),
      job.timeoutS ? field("Timeout", duration(job.timeoutS)) : null));
}

function logLine(line) {
  const extra = Object.entries(line).filter(([k]) =>
    !["seq", "timestamp", "level", "event"].includes(k));
  return h("div", {class: "log-line lvl-" + String(line.level || "info").replace(/\W/g, "")},
    h("span", {class: "log-ts"}, line.timestamp ? when(line.timestamp) : ""),
    h("span", {class: "log-lvl"}, line.level || ""),
    h("span", {class: "log-ev"}, line.event || ""),
    extra.map(([k, v]) => h("span", {class: "log-kv"}, `${k}=${shown(v)}`)));
}

// Follows GET .../log?follow=true (NDJSON): the daemon streams the lines there are, then new
// ones as they are written, and ends the stream once the job has ended.
function followLog(jobId, box, state, signal) {
  let after = 0;
  async function once() {
    const resp = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/log?follow=true&after=${after}`,
                             {signal, credentials: "same-origin", cache: "no-store"});
    if (!resp.ok) throw new ApiError(resp.status, "log", "cannot read the log");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!text.trim()) continue;
        const line = JSON.parse(text);
        after = Math.max(after, line.seq || 0);
        const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
        box.append(logLine(line));
        if (atEnd) box.scrollTop = box.scrollHeight;
      }
    }
  }
  (async () => {
    state.textContent = "following live";
    state.className = "live";
    for (let tries = 0; !signal.aborted; tries += 1) {
      try {
        await once();
        break;
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError && e.status === 401) { failed(new ApiError(401, "", "")); return; }
        await new Promise((r) => setTimeout(r, Math.min(5000, 500 * (tries + 1))));
      }
    }
    if (!signal.aborted) {
      state.textContent = "complete";
      state.className = "muted";
      if (!box.childElementCount) box.append(h("div", {class: "muted"}, "No log lines."));
    }
  })();
}

function actions(job, script) {
  const out = h("div", {class: "actions", id: "job-actions"});
  if (ACTIVE.has(job.status) && can("jobs:cancel")) {
    out.append(h("button", {type: "button", class: "danger", id: "cancel-job",
      onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await post(`/v1/jobs/${encodeURIComponent(job.jobId)}/cancel`);
          toast("Cancel requested.");
        } catch (e) { failed(e); ev.target.disabled = false; }
      }}, "Cancel job"));
  }
  if (script && mayTrigger(script)) {
    out.append(h("button", {type: "button", id: "run-again",
      onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          const body = {scriptId: job.scriptId, params: job.params || {}};
          if (job.timeoutS !== null && job.timeoutS !== undefined) body.timeoutS = job.timeoutS;
          const created = await post("/v1/jobs", body);
          toast("Started job " + created.jobId + ".");
          navigate("/ui/jobs/" + encodeURIComponent(created.jobId));
        } catch (e) { failed(e); ev.target.disabled = false; }
      }}, "Run again"));
  }
  return out;
}

export function jobPage(main, {args: [jobId]}) {
  const ctl = new AbortController();
  let timer = null;
  const title = h("h1", null, "Job ", h("span", {class: "mono"}, jobId), " ");
  const status = h("span", {id: "job-status"});
  title.append(status);
  const top = h("div", {id: "job-top"});
  const grid = h("div", {class: "columns"});
  const logState = h("span", {id: "log-state", class: "muted"});
  const logBox = h("div", {class: "log", id: "job-log", tabindex: "0"});
  main.append(h("p", null, h("a", {href: "/ui/jobs"}, "← Jobs")), title, top, grid,
              h("section", {class: "card"}, h("h2", null, "Log ", logState), logBox));
  let lastStatus = null;
  let following = false;

  async function refresh() {
    clearTimeout(timer);
    let job;
    try {
      job = await get("/v1/jobs/" + encodeURIComponent(jobId), {signal: ctl.signal});
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        clear(main).append(h("h1", null, "No such job"), h("p", null, e.message));
        return;
      }
      failed(e);
      if (!ctl.signal.aborted) timer = setTimeout(refresh, POLL_DONE_MS);
      return;
    }
    clear(status).append(badge(job.status));
    if (job.status !== lastStatus) {
      const scripts = await scriptList().catch(() => []);
      clear(top).append(actions(job, scripts.find((s) => s.scriptId === job.scriptId)));
      lastStatus = job.status;
    }
    clear(grid).append(detailsView(job), progressView(job), paramsView(job), reportView(job));
    if (!following) {
      following = true;
      followLog(job.jobId, logBox, logState, ctl.signal);
    }
    if (!ctl.signal.aborted) {
      timer = setTimeout(refresh, ACTIVE.has(job.status) ? POLL_ACTIVE_MS : POLL_DONE_MS);
    }
  }

  refresh();
  return () => { ctl.abort(); clearTimeout(timer); };
}
