// The record browser: a page of records from an offset or a time, pages
// forwards and backwards, and offsets that hold no record shown as gaps.

import { $, clear } from "./dom.js";
import { call, describe } from "./api.js";
import { parseExact, recordItem, gapItem } from "./render.js";

const PAGE = 20;
/** The page on show: where it was asked from and what came. */
const shown = { from: null, first: null, next: null };

async function bounds() {
  const answer = await call("/status");
  if (!answer.ok) throw new Error(describe(answer));
  return { lowest: answer.body.lowest_offset, next: answer.body.next_offset };
}

async function fetchPage(query) {
  const answer = await call("/?" + query);
  if (answer.status !== 200) return { error: describe(answer) };
  // Parsed again, keeping numbers exactly as they were appended.
  return { page: parseExact(answer.text) };
}

function render(from, page, what) {
  const list = clear($("record-list"));
  let expected = from;
  for (const record of page.records) {
    if (expected !== null && record.offset > expected) list.append(gapItem(expected, record.offset - 1));
    list.append(recordItem(record));
    expected = record.offset + 1;
  }
  if (expected !== null && page.next_offset > expected) list.append(gapItem(expected, page.next_offset - 1));
  const first = page.records.length ? page.records[0].offset : from;
  shown.from = from;
  shown.first = first;
  shown.next = page.next_offset;
  const count = page.records.length;
  $("records-where").textContent = count
    ? what + ": " + count + " record" + (count === 1 ? "" : "s") + ", offsets " + page.records[0].offset + "–" + page.records[count - 1].offset + " (next " + page.next_offset + ")"
    : what + ": no records from offset " + from + " yet (next " + page.next_offset + ")";
}

function fail(message) {
  $("records-where").textContent = message;
}

export async function showFrom(offset, what = "From offset " + offset) {
  const { page, error } = await fetchPage("from=" + offset + "&limit=" + PAGE);
  if (error) return fail(error);
  render(offset, page, what);
}

export async function showFromTime(ms) {
  const { page, error } = await fetchPage("from_timestamp=" + ms + "&limit=" + PAGE);
  if (error) return fail(error);
  const from = page.records.length ? page.records[0].offset : page.next_offset;
  render(from, page, "From " + new Date(ms).toLocaleString(undefined, { hour12: false }));
}

async function previous() {
  if (shown.first === null) return newest();
  const { lowest } = await bounds();
  await showFrom(Math.max(lowest, shown.first - PAGE));
}

async function next() {
  if (shown.next === null) return oldest();
  await showFrom(shown.next);
}

async function oldest() {
  const { lowest } = await bounds();
  await showFrom(lowest, "Oldest");
}

/** The last page: the last records readers see (GET /?tail=N). */
async function newest() {
  const { page, error } = await fetchPage("tail=" + PAGE);
  if (error) return fail(error);
  const from = page.records.length ? page.records[0].offset : page.next_offset;
  render(from, page, "Newest");
}

function typing(event) {
  const target = event.target;
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target.isContentEditable;
}

export function startRecords() {
  $("jump-offset").addEventListener("submit", (event) => {
    event.preventDefault();
    const offset = $("offset-input").value.trim();
    if (/^\d+$/.test(offset)) showFrom(Number(offset));
  });
  $("jump-time").addEventListener("submit", (event) => {
    event.preventDefault();
    const ms = new Date($("time-input").value).getTime();
    if (!Number.isNaN(ms)) showFromTime(ms);
  });
  $("page-first").addEventListener("click", oldest);
  $("page-prev").addEventListener("click", previous);
  $("page-next").addEventListener("click", next);
  $("page-last").addEventListener("click", newest);
  // Left and right arrows page when the record list (or nothing) has focus.
  document.addEventListener("keydown", (event) => {
    if (typing(event) || event.altKey || event.ctrlKey || event.metaKey) return;
    if (!$("records").contains(document.activeElement) && document.activeElement !== document.body) return;
    if (event.key === "ArrowLeft") previous();
    if (event.key === "ArrowRight") next();
  });
  return newest();
}
