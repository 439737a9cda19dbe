// The log card: bounds, size and segments from /status, and the append
// rate (records/s and bytes/s) over the last minutes, computed from the
// node's own counters in /metrics.

import { $, facts, bytes, rate, svg, clear } from "./dom.js";
import { call } from "./api.js";

const WINDOW_MS = 5 * 60 * 1000;
const samples = [];

export function showLog(status) {
  const pairs = [
    ["Lowest offset", status.lowest_offset],
    ["Next offset", status.next_offset],
    ["Size", bytes(status.size_bytes)],
    ["Segments", status.segments],
  ];
  if (status.retention_bytes !== undefined) pairs.push(["Retention (size)", status.retention_bytes === null ? "keep all" : bytes(status.retention_bytes)]);
  if (status.retention_ms !== undefined) pairs.push(["Retention (age)", status.retention_ms === null ? "keep all" : duration(status.retention_ms)]);
  facts($("log-facts"), pairs);
}

function duration(ms) {
  const units = [["d", 86400000], ["h", 3600000], ["min", 60000], ["s", 1000]];
  for (const [unit, size] of units) if (ms >= size && ms % size === 0) return ms / size + " " + unit;
  return ms + " ms";
}

function counter(text, name) {
  const match = text.match(new RegExp("^" + name + "(?:\\{[^}]*\\})?\\s+(\\S+)", "m"));
  return match ? Number(match[1]) : null;
}

/** The chart spans the samples there are, up to the last 5 minutes. */
function draw(chart, points, key) {
  const now = performance.now();
  const span = Math.max(10000, Math.min(WINDOW_MS, now - (samples.length ? samples[0].t : now)));
  const max = Math.max(1, ...points.map((p) => p[key]));
  const coords = points.map((p) => {
    const x = 300 - ((now - p.t) / span) * 300;
    const y = 58 - (p[key] / max) * 54;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  // One rate is a short flat line; the area under the line is shaded.
  if (coords.length === 1) coords.unshift((Number(coords[0].split(",")[0]) - 6).toFixed(1) + "," + coords[0].split(",")[1]);
  clear(chart);
  if (!coords.length) return;
  const area = [coords[0].split(",")[0] + ",60", ...coords, coords[coords.length - 1].split(",")[0] + ",60"];
  chart.append(svg("polygon", { points: area.join(" ") }), svg("polyline", { points: coords.join(" ") }));
}

/** One poll of /metrics; false when the counters cannot be read (then stop). */
export async function sampleRates() {
  const answer = await call("/metrics");
  if (!answer.ok || typeof answer.body !== "string") {
    $("rate-records").textContent = answer.status === 403 ? "needs admin" : "–";
    return answer.status !== 401 && answer.status !== 403;
  }
  const records = counter(answer.body, "distlog_records_appended_total");
  const byteCount = counter(answer.body, "distlog_bytes_appended_total");
  const t = performance.now();
  samples.push({ t, records, bytes: byteCount });
  while (samples.length && t - samples[0].t > WINDOW_MS) samples.shift();
  const rates = [];
  for (let i = 1; i < samples.length; i += 1) {
    const a = samples[i - 1];
    const b = samples[i];
    const seconds = (b.t - a.t) / 1000;
    if (seconds <= 0 || b.records < a.records) continue;
    rates.push({ t: b.t, records: (b.records - a.records) / seconds, bytes: (b.bytes - a.bytes) / seconds });
  }
  const last = rates[rates.length - 1];
  $("rate-records").textContent = last ? rate(last.records) : "–";
  $("rate-bytes").textContent = last ? bytes(last.bytes) + "/s" : "–";
  draw($("chart-records"), rates, "records");
  draw($("chart-bytes"), rates, "bytes");
  return true;
}
