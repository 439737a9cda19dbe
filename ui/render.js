// How a record looks: its offset (a link to GET /{offset}), its time, and
// its value, JSON pretty-printed and highlighted or binary as hex and
// base64. Everything is built as DOM text: a record's contents never
// become markup.

import { el, bytes } from "./dom.js";

/** A number whose text a JavaScript number would change (2^64 - 1, 1e400). */
class RawNumber {
  constructor(text) {
    this.text = text;
  }
}

/**
 * JSON.parse that keeps every number exactly as sent: where the engine
 * gives the source text (current browsers do), a number written otherwise
 * than a double prints it (2^64 - 1, 1.0, 1e3) is kept as written.
 */
export function parseExact(text) {
  return JSON.parse(text, (key, value, context) => {
    const source = context && context.source;
    if (typeof value === "number" && typeof source === "string" && String(value) !== source) {
      return new RawNumber(source);
    }
    return value;
  });
}

/** Beyond this many characters a value is shown plainly, not highlighted. */
const HIGHLIGHT_LIMIT = 64 * 1024;
/** Bytes of a binary record shown as hex. */
const HEX_LIMIT = 4096;

function span(kind, text) {
  return el("span", { class: "j-" + kind }, text);
}

function pretty(value, indent, out) {
  const pad = "  ".repeat(indent + 1);
  const end = "  ".repeat(indent);
  if (value instanceof RawNumber) out.push(span("num", value.text));
  else if (value === null) out.push(span("lit", "null"));
  else if (typeof value === "boolean") out.push(span("lit", String(value)));
  else if (typeof value === "number") out.push(span("num", String(value)));
  else if (typeof value === "string") out.push(span("str", JSON.stringify(value)));
  else if (Array.isArray(value)) {
    if (value.length === 0) return out.push("[]");
    out.push("[\n");
    value.forEach((item, i) => {
      out.push(pad);
      pretty(item, indent + 1, out);
      out.push(i + 1 < value.length ? ",\n" : "\n");
    });
    out.push(end + "]");
  } else {
    const keys = Object.keys(value);
    if (keys.length === 0) return out.push("{}");
    out.push("{\n");
    keys.forEach((key, i) => {
      out.push(pad, span("key", JSON.stringify(key)), ": ");
      pretty(value[key], indent + 1, out);
      out.push(i + 1 < keys.length ? ",\n" : "\n");
    });
    out.push(end + "}");
  }
  return out;
}

/** A `<pre>` of the value, highlighted when it is not huge. */
export function jsonBlock(value) {
  const plain = JSON.stringify(value, (k, v) => (v instanceof RawNumber ? Number(v.text) : v), 2) || "";
  if (plain.length > HIGHLIGHT_LIMIT) {
    return el("pre", {}, plain.slice(0, HIGHLIGHT_LIMIT) + "\n… (" + bytes(plain.length) + "; open the record's link for all of it)");
  }
  return el("pre", { class: "json" }, pretty(value, 0, []));
}

function decodeBase64(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) out[i] = binary.charCodeAt(i);
  return out;
}

export function hexDump(data) {
  const lines = [];
  const shown = Math.min(data.length, HEX_LIMIT);
  for (let at = 0; at < shown; at += 16) {
    const row = data.subarray(at, Math.min(at + 16, shown));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const text = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(at.toString(16).padStart(8, "0") + "  " + hex.padEnd(47) + "  |" + text + "|");
  }
  if (data.length > shown) lines.push("… " + (data.length - shown) + " more bytes");
  return lines.join("\n");
}

function binaryBlocks(base64) {
  let data;
  try {
    data = decodeBase64(base64);
  } catch {
    return [el("pre", {}, base64)];
  }
  const shownBase64 = base64.length > HIGHLIGHT_LIMIT ? base64.slice(0, HIGHLIGHT_LIMIT) + "…" : base64;
  return [
    el("div", { class: "label" }, "binary, " + bytes(data.length) + ": hex"),
    el("pre", { class: "hex" }, hexDump(data)),
    el("div", { class: "label" }, "base64"),
    el("pre", { class: "b64" }, shownBase64),
  ];
}

export function timeText(ms) {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? String(ms) : date.toLocaleString(undefined, { hour12: false }) + "." + String(ms % 1000).padStart(3, "0");
}

/** One record as a list item. */
export function recordItem(record) {
  const link = el("a", { href: "/" + record.offset, title: "GET /" + record.offset }, "#" + record.offset);
  const time = el("time", { datetime: new Date(record.timestamp).toISOString() }, timeText(record.timestamp));
  const body = "value_base64" in record ? binaryBlocks(record.value_base64) : [jsonBlock(record.value)];
  return el("li", { class: "record", "data-offset": record.offset }, el("header", {}, link, time), ...body);
}

/** Offsets from `from` to `to` (inclusive) that hold no record for readers. */
export function gapItem(from, to) {
  const what = from === to ? "offset " + from : "offsets " + from + "–" + to;
  return el("li", { class: "gap" }, what + ": no record (control entries or deleted)");
}
