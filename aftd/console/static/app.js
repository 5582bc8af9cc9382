// The console's shell: sign-in, navigation, and one page at a time drawn from the URL path.
import {ApiError, can, forgetScripts, resume, signIn, signOut, whoAmI} from "./api.js";
import {clear, h} from "./dom.js";
import {healthPage} from "./health.js";
import {jobPage} from "./job.js";
import {jobsPage} from "./jobs.js";
import {reportsPage} from "./reports.js";
import {scriptsPage} from "./scripts.js";
import {triggersPage} from "./triggers.js";

const ROUTES = [
  [/^\/ui\/?$/, "jobs", jobsPage],
  [/^\/ui\/jobs\/?$/, "jobs", jobsPage],
  [/^\/ui\/jobs\/([^/]+)$/, "jobs", jobPage],
  [/^\/ui\/scripts\/?$/, "scripts", scriptsPage],
  [/^\/ui\/triggers\/?$/, "triggers", triggersPage],
  [/^\/ui\/reports\/?$/, "reports", reportsPage],
  [/^\/ui\/health\/?$/, "health", healthPage],
];

// The scope a page needs to be listed in the navigation.
const PAGE_SCOPE = {
  jobs: "jobs:read", scripts: "jobs:read", triggers: "jobs:read", reports: "jobs:read",
  health: null,  // any key
};

let session = null;
let stopPage = null;
let rendering = 0;

export function navigate(url, {replace = false} = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = "toast-" + kind;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, kind === "error" ? 8000 : 4000);
}

// Any page's failed call: a lost session goes back to sign-in, anything else is shown.
export function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    session = null;
    showSignIn("Your session has ended; sign in again.");
    return;
  }
  if (err && err.name === "AbortError") return;
  toast(err instanceof ApiError ? `${err.message} (${err.status} ${err.code})` : String(err),
        "error");
}

function showShell(identity) {
  document.getElementById("who-name").textContent = identity.name;
  document.getElementById("who").hidden = false;
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const a of nav.querySelectorAll("a[data-page]")) {
    const scope = PAGE_SCOPE[a.dataset.page];
    a.hidden = scope ? !can(scope) : false;
  }
}

function hideShell() {
  document.getElementById("who").hidden = true;
  document.getElementById("nav").hidden = true;
}

function showSignIn(message) {
  if (stopPage) { stopPage(); stopPage = null; }
  hideShell();
  const main = clear(document.getElementById("main"));
  const error = h("p", {class: "error", id: "signin-error", role: "alert"}, message || "");
  const input = h("input", {type: "password", id: "api-key", name: "api-key",
                            autocomplete: "off", required: true, spellcheck: "false"});
  const form = h("form", {class: "card signin", id: "signin-form"},
    h("h1", null, "Sign in"),
    h("p", null, "Sign in with an API key once; the console then keeps a session until it " +
      "expires, you sign out, or the daemon restarts."),
    h("label", {for: "api-key"}, "API key"), input,
    h("button", {type: "submit", class: "primary"}, "Sign in"), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      session = await signIn(input.value);
      input.value = "";
      render();
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : String(e);
    }
  });
  main.append(form);
  input.focus();
}

async function render() {
  const token = ++rendering;
  if (stopPage) { stopPage(); stopPage = null; }
  if (!session) session = await resume().catch(() => null);
  if (token !== rendering) return;
  if (!session) { showSignIn(); return; }
  let identity;
  try {
    identity = await whoAmI(session.name);
  } catch (e) { failed(e); return; }
  if (token !== rendering) return;
  showShell(identity);
  forgetScripts();
  const path = location.pathname;
  const main = clear(document.getElementById("main"));
  for (const [pattern, name, page] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.page === name);
    }
    const params = new URLSearchParams(location.search);
    stopPage = page(main, {args: m.slice(1).map(decodeURIComponent), params}) || null;
    return;
  }
  main.append(h("h1", null, "Not found"), h("p", null, "No console page at this address."),
              h("a", {href: "/ui/"}, "Jobs"));
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey ||
      ev.shiftKey || ev.altKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui")) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener("popstate", render);

document.getElementById("sign-out").addEventListener("click", async () => {
  try { await signOut(); } catch (e) { if (!(e instanceof ApiError)) failed(e); }
  session = null;
  showSignIn("Signed out.");
});

render();
