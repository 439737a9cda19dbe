// The live tail: records as they are appended, over Server-Sent Events.
// Pausing closes the stream; resuming, or reconnecting after a failure,
// asks for the stream again with Last-Event-ID set to the last record
// received, so no record is missed or shown twice.

import { $ } from "./dom.js";
import { call, readEvents } from "./api.js";
import { parseExact, recordItem, gapItem } from "./render.js";

/** Records kept on screen; older ones leave the list. */
const KEEP = 200;
const RETRY_MS = 1000;
const FLUSH_MS = 100;

const tail = { from: null, lastId: null, count: 0, paused: false, controller: null, generation: 0 };

function setState(text, kind) {
  const badge = $("tail-state");
  badge.textContent = text;
  badge.className = "badge" + (kind ? " " + kind : "");
}

/** Items waiting for the next paint: a fast log adds many per frame. */
let pending = [];
let flushing = null;

function flush() {
  flushing = null;
  const list = $("tail-list");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  list.append(...pending.map((build) => build()));
  pending = [];
  while (list.childElementCount > KEEP) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
  $("tail-count").textContent = String(tail.count);
}

/** Shows what `build` makes with the next batch (10 a second at most); only the last KEEP are built. */
function show(build) {
  pending.push(build);
  if (pending.length > KEEP) pending = pending.slice(-KEEP);
  if (flushing === null) flushing = setTimeout(flush, FLUSH_MS);
}

function onEvent(event) {
  if (event.type === "message") {
    // Parsed only if it is still among the last KEEP when the batch is shown.
    tail.lastId = event.id === null ? parseExact(event.data).offset : Number(event.id);
    tail.count += 1;
    show(() => recordItem(parseExact(event.data)));
  } else if (event.type === "gap") {
    const gap = JSON.parse(event.data);
    show(() => gapItem(gap.from, gap.to - 1));
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
