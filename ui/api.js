// The public API, as the console uses it: every request carries the token
// kept in this tab (sessionStorage), and a 401 asks for one. Event streams
// are read with fetch rather than EventSource, which cannot send
// Authorization or choose its Last-Event-ID.

const TOKEN_KEY = "distlog.token";
const listeners = new Set();

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Calls `listener(reason)` whenever the API answers 401. */
export function onUnauthorized(listener) {
  listeners.add(listener);
}

function headers(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set("Authorization", "Bearer " + t);
  return h;
}

/** A request; resolves to {status, ok, body (parsed JSON, else the text), text, response}. */
export async function call(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: headers(options.headers),
    cache: "no-store",
  });
  const type = response.headers.get("content-type") || "";
  const text = await response.text().catch(() => "");
  let body = text;
  if (type.startsWith("application/json")) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (response.status === 401) {
    const reason = body && body.error ? body.error : "authentication required";
    listeners.forEach((l) => l(reason));
  }
  return { status: response.status, ok: response.ok, body, text, response };
}

/** The error text of an answer that is not ok. */
export function describe(answer) {
  if (answer.body && typeof answer.body === "object" && answer.body.error) return answer.body.error;
  return "HTTP " + answer.status;
}

/**
 * Reads `GET /?from=..` as Server-Sent Events until `signal` aborts or the
 * stream ends. `lastId` (if not null) is sent as Last-Event-ID, so the
 * stream resumes right after it. `onOpen()` is called once it is answered,
 * `onEvent({type, id, data})` with each event.
 * Resolves when the stream ends; rejects on a network error or a refusal.
 */
export async function readEvents({ from, lastId, signal, onEvent, onOpen }) {
  const h = headers({ Accept: "text/event-stream" });
  if (lastId !== null && lastId !== undefined) h.set("Last-Event-ID", String(lastId));
  const query = from === null || from === undefined ? "/" : "/?from=" + encodeURIComponent(from);
  const response = await fetch(query, { headers: h, signal, cache: "no-store" });
  if (!response.ok) {
    if (response.status === 401) listeners.forEach((l) => l("authentication required"));
    throw new Error("event stream refused: HTTP " + response.status);
  }
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\n|\r/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (event.data.length) onEvent({ type: event.type, id: event.id, data: event.data.join("\n") });
        event = { type: "message", id: null, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") event.data.push(value);
      else if (field === "event") event.type = value;
      else if (field === "id") event.id = value;
    }
  }
}
