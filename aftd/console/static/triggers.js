// Triggers: schedules and watchers, their state, next fire and last error; pause, resume and
// run now for keys that may manage them.
import {ApiError, can, get, hasRoute, post} from "./api.js";
import {failed, toast} from "./app.js";
import {ago, badge, clear, h, shown, when} from "./dom.js";

const POLL_MS = 3000;
const COLUMNS = ["Name", "Type", "Script", "What", "State", "Next fire", "Last fired",
                 "Pending files", "Failed files", "Last error", ""];

// What the trigger watches or when it fires, from its settings.
function what(t) {
  const s = t.settings || {};
  if (t.type === "schedule") {
    const when_ = s.cron !== undefined ? `cron ${shown(s.cron)}` : `every ${shown(s.everyS)} s`;
    return s.timezone ? `${when_} (${shown(s.timezone)})` : when_;
  }
  if (s.vfs !== undefined) {
    return `${shown(s.vfs)}:${shown(s.path ?? "")}` + (s.pattern ? ` ${shown(s.pattern)}` : "");
  }
  return "";
}

function buttons(t, refresh) {
  if (!can("triggers:manage")) return "";
  const act = (verb) => async (ev) => {
    ev.target.disabled = true;
    try {
      const out = await post(`/v1/triggers/${encodeURIComponent(t.name)}/${verb}`);
      toast(verb === "run" && out && out.outcome
        ? `${t.name}: ${out.outcome}` + (out.jobId ? ` (job ${out.jobId})` : "")
        : `${t.name}: ${verb}d`);
    } catch (e) { failed(e); }
    refresh();
  };
  return h("span", {class: "actions"},
    t.state === "paused"
      ? h("button", {type: "button", class: "resume", onclick: act("resume")}, "Resume")
      : h("button", {type: "button", class: "pause", onclick: act("pause")}, "Pause"),
    h("button", {type: "button", class: "run", onclick: act("run")}, "Run now"));
}

function row(t, refresh) {
  return h("tr", {"data-trigger": t.name, "data-state": t.state},
    h("td", null, h("a", {href: "/ui/jobs?trigger=" + encodeURIComponent(t.name)}, t.name)),
    h("td", null, t.type || ""),
    h("td", null, t.script || ""),
    h("td", {class: "mono"}, what(t)),
    h("td", {class: "state"}, badge(t.state)),
    h("td", {title: t.nextFireAt || ""}, t.nextFireAt ? when(t.nextFireAt) : "–"),
    h("td", {title: t.lastFiredAt || ""}, t.lastFiredAt ? ago(t.lastFiredAt) : "–"),
    h("td", null, String(t.pendingFiles ?? "")),
    h("td", null, String(t.failedCount ?? "")),
    h("td", {class: "error-text"}, t.lastError || ""),
    h("td", null, buttons(t, refresh)));
}

export function triggersPage(main) {
  const ctl = new AbortController();
  let timer = null;
  const body = h("tbody", {id: "triggers-body"});
  main.append(h("h1", null, "Triggers"), h("table", {class: "grid", id: "triggers-table"},
    h("thead", null, h("tr", null, COLUMNS.map((x) => h("th", null, x)))), body));

  function note(text) {
    clear(body).append(h("tr", null, h("td", {colspan: COLUMNS.length, class: "muted"}, text)));
  }

  async function refresh() {
    clearTimeout(timer);
    if (!(await hasRoute("/v1/triggers"))) { note("This daemon has no triggers."); return; }
    try {
      const {triggers} = await get("/v1/triggers", {signal: ctl.signal});
      clear(body).append(...triggers.map((t) => row(t, refresh)));
      if (!triggers.length) note("No triggers are configured.");
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) note(e.message);
      else failed(e);
    }
    if (!ctl.signal.aborted) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { ctl.abort(); clearTimeout(timer); };
}
