// The append form: one JSON record or an NDJSON batch, posted to this
// node like any client's write (the same token, ACL and Origin checks).

import { $, el, clear } from "./dom.js";
import { call, describe } from "./api.js";

function offsetLink(offset) {
  return el("a", { href: "/" + offset }, "#" + offset);
}

async function send(event) {
  event.preventDefault();
  const result = clear($("append-result"));
  const kind = new FormData($("append-form")).get("kind");
  const body = $("append-body").value;
  const type = kind === "ndjson" ? "application/x-ndjson" : "application/json";
  $("append-send").disabled = true;
  try {
    const answer = await call("/", { method: "POST", body, headers: { "Content-Type": type }, redirect: "manual" });
    if (answer.response.type === "opaqueredirect" || answer.status === 307) {
      const status = await call("/status");
      const leader = status.ok && status.body.leader;
      result.append("This node does not take writes");
      if (leader) result.append(": append on the leader's console, ", el("a", { href: leader + "/ui" }, leader + "/ui"));
      return;
    }
    if (answer.status !== 201) return result.append("Refused: " + describe(answer));
    const done = answer.body;
    if ("first_offset" in done) result.append("Appended ", offsetLink(done.first_offset), " to ", offsetLink(done.last_offset));
    else result.append("Appended at ", offsetLink(done.offset));
  } catch (error) {
    result.append("Failed: " + error.message);
  } finally {
    $("append-send").disabled = false;
  }
}

export function startAppend() {
  $("append-form").addEventListener("submit", send);
}
