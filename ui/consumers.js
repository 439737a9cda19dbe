// Consumers: shown only where the node answers GET /consumers (consumer
// positions are not in every version); elsewhere the section stays hidden.
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
  const first = await call("/consumers");
  if (first.status !== 200) return;
  $("consumers").hidden = false;
  $("nav-consumers").hidden = false;
  render(first.body);
  every(2000, async () => {
    const answer = await call("/consumers");
    if (answer.status === 200) render(answer.body);
  });
}
