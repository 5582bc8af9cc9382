// Jobs: newest first, refreshed every two seconds; filters by status, script and trigger;
// paging with the API's cursor.
import {get, hasRoute, scriptList} from "./api.js";
import {failed, navigate} from "./app.js";
import {ago, badge, between, bytes, clear, duration, h} from "./dom.js";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"];
const PAGE = 25;
const POLL_MS = 2000;

function option(value, label, selected) {
  return h("option", {value, selected: value === selected}, label);
}

function filters(params, scripts, triggers) {
  const status = params.get("status") || "";
  const script = params.get("script") || "";
  const trigger = params.get("trigger") || "";
  const statusSel = h("select", {name: "status", id: "filter-status"},
    option("", "any status", status),
    option("queued,running", "active", status),
    STATES.map((s) => option(s, s, status)));
  const scriptSel = h("select", {name: "script", id: "filter-script"},
    option("", "any script", script),
    scripts.map((s) => option(s.scriptId, s.scriptId, script)));
  if (script && !scripts.some((s) => s.scriptId === script)) {
    scriptSel.append(option(script, script, script));
  }
  const form = h("form", {class: "filters", id: "job-filters"},
    h("label", null, "Status ", statusSel), h("label", null, "Script ", scriptSel));
  if (triggers) {
    const triggerSel = h("select", {name: "trigger", id: "filter-trigger"},
      option("", "any trigger", trigger),
      triggers.map((t) => option(t.name, t.name, trigger)));
    if (trigger && !triggers.some((t) => t.name === trigger)) {
      triggerSel.append(option(trigger, trigger, trigger));
    }
    form.append(h("label", null, "Trigger ", triggerSel));
  }
  form.addEventListener("change", () => {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    const s = q.toString();
    navigate("/ui/jobs" + (s ? "?" + s : ""), {replace: true});
  });
  return form;
}

function progressCell(job) {
  const p = job.progress || {};
  if (!p.bytesTotal && !p.bytesDone) return "";
  const pct = p.bytesTotal ? Math.min(100, Math.floor(100 * p.bytesDone / p.bytesTotal)) : null;
  return h("span", {class: "small"},
    bytes(p.bytesDone) + (p.bytesTotal ? ` of ${bytes(p.bytesTotal)} (${pct}%)` : ""));
}

function row(job) {
  const link = "/ui/jobs/" + encodeURIComponent(job.jobId);
  return h("tr", {"data-job": job.jobId, "data-status": job.status},
    h("td", null, h("a", {href: link, class: "mono"}, job.jobId)),
    h("td", null, job.scriptId),
    h("td", null, job.trigger || ""),
    h("td", {class: "status"}, badge(job.status)),
    h("td", {title: job.createdAt}, ago(job.createdAt)),
    h("td", null, duration(between(job.startedAt, job.finishedAt))),
    h("td", null, progressCell(job)));
}

export function jobsPage(main, {params}) {
  const ctl = new AbortController();
  let timer = null;
  const cursors = [];  // the cursors of the pages before this one
  let cursor = null;
  let next = null;
  const body = h("tbody", {id: "jobs-body"});
  const older = h("button", {type: "button", id: "older"}, "Older →");
  const newer = h("button", {type: "button", id: "newer"}, "← Newer");
  const pageInfo = h("span", {class: "muted"});
  const table = h("table", {class: "grid", id: "jobs-table"},
    h("thead", null, h("tr", null, ["Job", "Script", "Trigger", "Status", "Created",
                                    "Duration", "Transferred"].map((t) => h("th", null, t)))),
    body);
  const holder = h("div", null);
  main.append(h("h1", null, "Jobs"), holder, table,
              h("div", {class: "pager"}, newer, pageInfo, older));

  async function setup() {
    const [scripts, hasTriggers] = await Promise.all([
      scriptList(),
      hasRoute("/v1/triggers")]);
    const triggers = hasTriggers
      ? await get("/v1/triggers", {signal: ctl.signal}).then((b) => b.triggers, () => [])
      : null;
    holder.append(filters(params, scripts, triggers));
  }

  function query() {
    const q = new URLSearchParams({limit: String(PAGE)});
    for (const k of ["status", "script", "trigger"]) {
      if (params.get(k)) q.set(k, params.get(k));
    }
    if (cursor) q.set("cursor", cursor);
    return q.toString();
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const page = await get("/v1/jobs?" + query(), {signal: ctl.signal});
      next = page.nextCursor;
      clear(body).append(...page.jobs.map(row));
      if (!page.jobs.length) {
        body.append(h("tr", null, h("td", {colspan: 7, class: "muted"}, "No jobs.")));
      }
      older.disabled = !next;
      newer.disabled = cursors.length === 0;
      pageInfo.textContent = `page ${cursors.length + 1}`;
    } catch (e) {
      failed(e);
      if (ctl.signal.aborted) return;
    }
    if (!ctl.signal.aborted) timer = setTimeout(refresh, POLL_MS);
  }

  older.addEventListener("click", () => {
    if (!next) return;
    cursors.push(cursor);
    cursor = next;
    refresh();
  });
  newer.addEventListener("click", () => {
    if (!cursors.length) return;
    cursor = cursors.pop();
    refresh();
  });

  setup().catch(failed);
  refresh();
  return () => { ctl.abort(); clearTimeout(timer); };
}
