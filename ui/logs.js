// Named logs: GET /logs as a table (name, status, replicas, where the log's leader is and the
// node it prefers, next offset, size), refreshed every 2 s. Shown once the node lists a named
// log; a read replica serves none (its /logs answers 501), so it is not asked.

import { $, el, clear, every } from "./dom.js";
import { call } from "./api.js";

const EVERY_MS = 2000;

function host(url) {
  if (!url) return "–";
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function size(bytes) {
  if (typeof bytes !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
}

function row(log) {
  const moved = log.leader && log.preferred_leader && log.leader !== log.preferred_leader;
  const records = "/logs/" + encodeURIComponent(log.name) + "/?from=" + (log.lowest_offset || 0) + "&limit=20";
  return el(
    "tr",
    { "data-log": log.name, "data-status": log.status },
    el("td", {}, el("a", { href: records }, log.name)),
    el("td", {}, log.status),
    el("td", { class: "num" }, String(log.settings ? log.settings.replicas : "–")),
    el("td", { title: log.leader || "" }, host(log.leader), moved ? el("span", { class: "badge" }, "moved") : ""),
    el("td", { title: log.preferred_leader || "" }, host(log.preferred_leader)),
    el("td", { class: "num" }, log.status === "live" || log.status === "moving" ? String(log.next_offset) : "–"),
    el("td", { class: "num" }, log.status === "live" || log.status === "moving" ? size(log.size_bytes) : "–"),
  );
}

function render(body) {
  const logs = body && Array.isArray(body.logs) ? body.logs : [];
  $("logs").hidden = logs.length === 0;
  $("nav-logs").hidden = logs.length === 0;
  clear($("logs-table").tBodies[0]).append(...logs.map(row));
}

export async function startLogs() {
  const status = await call("/status");
  if (!status.ok || (status.body && status.body.replication_state)) return;
  const refresh = async () => {
    const answer = await call("/logs", { redirect: "manual" });
    if (answer.status === 200) render(answer.body);
  };
  await refresh();
  every(EVERY_MS, refresh);
}
