// The live tail: records as they are appended, over Server-Sent Events.
// Pausing closes the stream; resuming, or reconnecting after a failure,
// asks for the stream again with Last-Event-ID set to the last record
// received, so no record is missed or shown twice.

import { $, el } from "./dom.js";
import { call, readEvents } from "./api.js";
import { parseExact, recordItem, gapItem } from "./render.js";

/** Records kept on screen; older ones leave the list. */
const KEEP = 200;
const RETRY_MS = 1000;

const tail = { from: null, lastId: null, count: 0, paused: false, controller: null, generation: 0 };

function setState(text, kind) {
  const badge = $("tail-state");
  badge.textContent = text;
  badge.className = "badge" + (kind ? " " + kind : "");
}

function show(item) {
  const list = $("tail-list");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  list.append(item);
  while (list.childElementCount > KEEP) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function onEvent(event) {
  if (event.type === "message") {
    const record = parseExact(event.data);
    tail.lastId = event.id === null ? record.offset : Number(event.id);
    tail.count += 1;
    $("tail-count").textContent = String(tail.count);
    show(recordItem(record));
  } else if (event.type === "gap") {
    const gap = JSON.parse(event.data);
    show(gapItem(gap.from, gap.to - 1));
  } else if (event.type === "error") {
    const error = JSON.parse(event.data);
    setState("error: " + error.error, "bad");
  }
}

async function connect() {
  const generation = ++tail.generation;
  const controller = new AbortController();
  tail.controller = controller;
  setState(tail.count ? "reconnecting" : "connecting");
  try {
    const onOpen = () => setState("live", "ok");
    await readEvents({ from: tail.from, lastId: tail.lastId, signal: controller.signal, onEvent, onOpen });
  } catch (error) {
    if (controller.signal.aborted) return;
    setState("disconnected", "bad");
  }
  if (generation === tail.generation && !tail.paused) setTimeout(() => generation === tail.generation && connect(), RETRY_MS);
}

function toggle() {
  const button = $("tail-toggle");
  tail.paused = !tail.paused;
  button.textContent = tail.paused ? "Resume" : "Pause";
  button.setAttribute("aria-pressed", String(tail.paused));
  if (tail.paused) {
    tail.generation += 1;
    if (tail.controller) tail.controller.abort();
    setState("paused");
  } else {
    connect();
  }
}

/** Starts at the log's next offset (asked first, so a reconnect before any record still misses none). */
export async function startTail() {
  $("tail-toggle").addEventListener("click", toggle);
  const answer = await call("/status");
  if (answer.ok) tail.from = answer.body.next_offset;
  connect();
}
