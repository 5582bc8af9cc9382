// The REST API as the console uses it: the session cookie authenticates (the browser sends it,
// JavaScript cannot read it), and the session's CSRF token goes in a header on every request
// that changes something.

let csrfToken = null;
let identity = null;  // {name, scopes, scripts} of the key that signed in
let scripts = null;  // a promise of GET /v1/scripts, read again on every page

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const SAFE = new Set(["GET", "HEAD"]);

export async function call(method, path, {body, headers, signal} = {}) {
  const h = {"Accept": "application/json", ...(headers || {})};
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (!SAFE.has(method) && csrfToken) h["X-CSRF-Token"] = csrfToken;
  const resp = await fetch(path, {
    method, headers: h, signal, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.code || "http_" + resp.status,
                       err.message || resp.statusText || "request failed");
  }
  return data;
}

export const get = (path, opts) => call("GET", path, opts);
export const post = (path, body, opts) => call("POST", path, {...(opts || {}), body});

function adopt(session) {
  csrfToken = session.csrfToken;
  return session;
}

// Sign in with an API key: the key is sent once, here, and never kept.
export async function signIn(key) {
  const session = await call("POST", "/v1/session", {headers: {"X-API-Key": key}});
  adopt(session);
  identity = null;
  scripts = null;
  return session;
}

// The session of the cookie the browser holds, or null when signed out.
export async function resume() {
  try {
    return adopt(await get("/v1/session"));
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 404)) return null;
    throw e;
  }
}

export async function signOut() {
  try {
    await call("DELETE", "/v1/session");
  } finally {
    csrfToken = null;
    identity = null;
    scripts = null;
  }
}

// What the signed-in key may do (GET /v1/me): its scopes in effect (admin expanded) and the
// patterns of the scripts it may trigger.
export async function whoAmI(fallbackName) {
  if (identity) return identity;
  try {
    identity = await get("/v1/me");
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    identity = {name: fallbackName, scopes: ["admin"], scripts: ["*"]};  // an older daemon
  }
  return identity;
}

export function can(scope) {
  if (!identity) return false;
  const scopes = identity.scopes || [];
  return scopes.includes("admin") || scopes.includes(scope);
}

// Whether the key may trigger a script: the daemon says so per script in GET /v1/scripts
// (the key's jobs:trigger scope and its scripts patterns); the list is read once per page.
export function scriptList() {
  if (!scripts) {
    scripts = get("/v1/scripts").then((b) => b.scripts);
    scripts.catch(() => { scripts = null; });
  }
  return scripts;
}

export function forgetScripts() {
  scripts = null;
}

export function mayTrigger(script) {
  return can("jobs:trigger") && script.triggerable !== false;
}

// Whether the daemon has a route (the triggers and reports pages appear with their routes).
const known = new Map();
export async function hasRoute(path) {
  if (!known.has(path)) {
    known.set(path, get(path).then(() => true, (e) =>
      !(e instanceof ApiError && e.status === 404 && e.code === "not_found")));
  }
  return known.get(path);
}
