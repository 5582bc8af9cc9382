// Building the page: every piece of data goes in as a text node or an attribute value, never
// parsed as HTML, so a job param such as <img src=x onerror=...> is shown as text.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// h("a", {href: "/ui/"}, "text", otherNode): an element; strings become text nodes.
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function bytes(n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 2 : 1)) + " " + UNITS[i];
}

export function rate(bps) {
  return bps ? bytes(bps) + "/s" : "–";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60); s -= mm * 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${String(mm).padStart(2, "0")} min`;
  return `${mm} min ${String(s).padStart(2, "0")} s`;
}

export function when(iso) {
  if (!iso) return "–";
  const t = new Date(iso);
  return isNaN(t) ? String(iso) : t.toLocaleString();
}

export function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!isFinite(s)) return "";
  return s >= 0 ? duration(s) + " ago" : "in " + duration(-s);
}

// Job seconds between two ISO times (or until now).
export function between(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? new Date(endIso).getTime() : Date.now();
  return (end - new Date(startIso).getTime()) / 1000;
}

export function badge(status) {
  return h("span", {class: "badge s-" + String(status).replace(/[^a-z_-]/gi, "")}, status);
}

// A value as an operator reads it: strings as they are, anything else as JSON.
export function shown(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

export function field(label, value) {
  return [h("dt", null, label), h("dd", null, value === null || value === undefined ? "–" : value)];
}
