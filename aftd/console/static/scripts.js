// Scripts: the list, and a form per script to trigger it with params.
import {ApiError, mayTrigger, post, scriptList} from "./api.js";
import {failed, navigate, toast} from "./app.js";
import {h} from "./dom.js";

function paramRow(name = "", value = "") {
  const row = h("div", {class: "param-row"},
    h("input", {type: "text", class: "param-name", placeholder: "name", value,
                "aria-label": "parameter name"}),
    h("input", {type: "text", class: "param-value", placeholder: "value",
                "aria-label": "parameter value"}),
    h("button", {type: "button", class: "link", onclick: () => row.remove()}, "remove"));
  row.querySelector(".param-name").value = name;
  row.querySelector(".param-value").value = value;
  return row;
}

function runForm(script) {
  const rows = h("div", {class: "param-rows"}, paramRow());
  const timeout = h("input", {type: "number", min: "0", step: "any", name: "timeoutS",
                              class: "timeout", placeholder: "script default"});
  const error = h("p", {class: "error", role: "alert"});
  const form = h("form", {class: "run-form", "data-script": script.scriptId},
    h("div", {class: "muted small"}, "Params (values are sent as text)"), rows,
    h("button", {type: "button", class: "link", onclick: () => rows.append(paramRow())},
      "+ add parameter"),
    h("label", null, "Timeout (s) ", timeout),
    h("button", {type: "submit", class: "primary"}, "Start job"), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const params = {};
    for (const row of rows.querySelectorAll(".param-row")) {
      const name = row.querySelector(".param-name").value.trim();
      if (!name) continue;
      if (name in params) { error.textContent = `parameter ${name} given twice`; return; }
      params[name] = row.querySelector(".param-value").value;
    }
    const body = {scriptId: script.scriptId, params};
    if (timeout.value !== "") body.timeoutS = Number(timeout.value);
    try {
      const job = await post("/v1/jobs", body);
      toast("Started job " + job.jobId + ".");
      navigate("/ui/jobs/" + encodeURIComponent(job.jobId));
    } catch (e) {
      if (e instanceof ApiError && e.status !== 401) error.textContent = e.message;
      else failed(e);
    }
  });
  return form;
}

export function scriptsPage(main) {
  const ctl = new AbortController();
  const list = h("div", {id: "scripts-list"});
  main.append(h("h1", null, "Scripts"), list);
  scriptList().then((scripts) => {
    if (!scripts.length) list.append(h("p", {class: "muted"}, "No scripts."));
    for (const s of scripts) {
      const card = h("section", {class: "card script", "data-script": s.scriptId},
        h("h2", null, s.name, " ", h("span", {class: "mono muted small"}, s.scriptId)),
        h("p", null, s.description || h("span", {class: "muted"}, "(no description)")),
        h("p", null, h("a", {href: "/ui/jobs?script=" + encodeURIComponent(s.scriptId)},
                       "jobs of this script")));
      if (mayTrigger(s)) {
        card.append(h("details", {class: "run"},
          h("summary", null, "Run with params…"), runForm(s)));
      }
      list.append(card);
    }
  }, failed);
  return () => ctl.abort();
}
