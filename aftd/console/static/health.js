// Health: version, uptime, jobs running and queued, reports pending, and the bytes transferred
// per minute over the last hour as a bar chart.
import {ApiError, can, get} from "./api.js";
import {failed} from "./app.js";
import {bytes, clear, duration, h, svg} from "./dom.js";

const POLL_MS = 5000;
const W = 960;
const H = 170;
const PAD = 28;

function tile(label, value, id) {
  return h("div", {class: "tile", id}, h("div", {class: "tile-value"}, value),
           h("div", {class: "tile-label"}, label));
}

function chart(series) {
  const buckets = series.buckets;
  const peak = Math.max(0, ...buckets.map((b) => b.bytes));
  const max = Math.max(1, peak);
  const slot = (W - PAD) / buckets.length;
  const plot = H - 2 * PAD + 8;
  const bars = buckets.map((b, i) => {
    const height = b.bytes ? Math.max(1, plot * b.bytes / max) : 0;
    const start = new Date(b.start);
    return svg("rect", {x: (PAD + i * slot + 1).toFixed(1), y: (PAD - 8 + plot - height).toFixed(1),
                        width: Math.max(1, slot - 2).toFixed(1), height: height.toFixed(1),
                        class: "bar"},
      svg("title", null, `${start.toLocaleTimeString()}: ${bytes(b.bytes)} ` +
                         `(${bytes(b.bytes / series.bucketSeconds)}/s)`));
  });
  return svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", id: "throughput-chart",
                     role: "img", "aria-label": "bytes transferred per minute, last hour"},
    svg("line", {x1: PAD, y1: PAD - 8 + plot, x2: W, y2: PAD - 8 + plot, class: "axis"}),
    svg("text", {x: PAD, y: 12, class: "label"}, peak ? `peak ${bytes(peak)}/min` : "no transfers"),
    svg("text", {x: PAD, y: H - 6, class: "label"}, "60 min ago"),
    svg("text", {x: W, y: H - 6, class: "label end"}, "now"),
    bars);
}

export function healthPage(main) {
  const ctl = new AbortController();
  let timer = null;
  const tiles = h("div", {class: "tiles", id: "health-tiles"});
  const chartBox = h("section", {class: "card", id: "throughput"},
                     h("h2", null, "Throughput, last hour"));
  const chartBody = h("div");
  chartBox.append(chartBody);
  main.append(h("h1", null, "Health"), tiles, chartBox);

  async function refresh() {
    clearTimeout(timer);
    try {
      let health;
      try {
        health = await get("/v1/health", {signal: ctl.signal});
      } catch (e) {
        // 503 while draining still carries the body.
        if (!(e instanceof ApiError) || e.status !== 503) throw e;
        health = {status: "draining", version: "", uptimeSeconds: null, jobs: {}};
      }
      clear(tiles).append(
        tile("status", health.status, "h-status"),
        tile("version", health.version, "h-version"),
        tile("uptime", duration(health.uptimeSeconds), "h-uptime"),
        tile("jobs running", String(health.jobs.running ?? "–"), "h-running"),
        tile("jobs queued", String(health.jobs.queued ?? "–"), "h-queued"),
        tile("reports pending", health.reports ? String(health.reports.pending) : "–",
             "h-reports"));
      if (!can("metrics:read")) {
        clear(chartBody).append(h("p", {class: "muted"},
          "The chart needs the metrics:read scope, which this key does not have."));
        return;
      }
      const series = await get("/v1/stats/throughput", {signal: ctl.signal});
      clear(chartBody).append(chart(series),
        h("p", {class: "muted small", id: "throughput-total"},
          `${bytes(series.totalBytes)} in the last hour`));
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        clear(chartBody).append(h("p", {class: "muted"}, e.message));
      } else failed(e);
    }
    if (!ctl.signal.aborted) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { ctl.abort(); clearTimeout(timer); };
}
