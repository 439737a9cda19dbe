// Consumers: shown only where the node answers GET /consumers itself
// (consumer positions are not in every version, and a --follow replica
// sends the request to its leader, another origin the page's policy does
// not let it reach); elsewhere the section stays hidden.
// Each position is a row with whatever fields the API gives.

import { $, el, clear, every } from "./dom.js";
import { call } from "./api.js";

function rowsOf(body) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body.consumers)) return body.consumers;
  return [];
}

function cellText(value) {
  return value !== null && typeof value === "object" ? JSON.stringify(value) : value === null ? "–" : String(value);
}

function render(body) {
  const rows = rowsOf(body);
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row || {})))];
  const table = $("consumer-table");
  clear(table.tHead).append(el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c))));
  clear(table.tBodies[0]).append(...rows.map((row) => el("tr", {}, columns.map((c) => el("td", {}, cellText(row[c]))))));
}

export async function startConsumers() {
  const first = await call("/consumers", { redirect: "manual" });
  if (first.status !== 200) return;
  $("consumers").hidden = false;
  $("nav-consumers").hidden = false;
  render(first.body);
  every(2000, async () => {
    const answer = await call("/consumers", { redirect: "manual" });
    if (answer.status === 200) render(answer.body);
  });
}
