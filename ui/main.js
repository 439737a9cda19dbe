// The console's entry point: signs in when the node asks for a token,
// polls /status (and /cluster on a member) every 300 ms, and starts each
// card. A leader marks a member unreachable 2 election timeouts (1.2 s by
// default) after its last answer; polling this often shows it red well
// within two seconds.

import { $, every } from "./dom.js";
import { call, describe, onUnauthorized, setToken, token } from "./api.js";
import { showCluster, roleText } from "./cluster.js";
import { showLog, sampleRates } from "./logview.js";
import { startRecords } from "./records.js";
import { startTail } from "./tail.js";
import { startAppend } from "./append.js";
import { startConsumers } from "./consumers.js";
import { startLogs } from "./logs.js";

const STATUS_EVERY_MS = 300;
const METRICS_EVERY_MS = 1000;

/** Set by a 401: polls wait for a token rather than being refused again. */
let signedOut = false;

function banner(text) {
  const node = $("banner");
  node.hidden = !text;
  node.textContent = text || "";
}

function openSignIn(reason) {
  const dialog = $("signin");
  if (reason) $("signin-why").textContent = "This node says: " + reason + ". The token is kept in this tab only (sessionStorage).";
  $("signin-clear").hidden = !token();
  if (!dialog.open) dialog.showModal();
}

function startSignIn() {
  onUnauthorized((reason) => {
    signedOut = true;
    banner("Sign in to see this node (it asks for a token).");
    openSignIn(reason);
  });
  $("signin-open").addEventListener("click", () => openSignIn(null));
  $("signin-cancel").addEventListener("click", () => $("signin").close());
  $("signin-clear").addEventListener("click", () => {
    setToken("");
    location.reload();
  });
  $("signin-form").addEventListener("submit", () => {
    setToken($("signin-token").value.trim());
    location.reload();
  });
}

async function pollStatus() {
  if (signedOut) return;
  let status;
  try {
    status = await call("/status");
  } catch {
    return banner("This node does not answer.");
  }
  if (!status.ok) return status.status === 401 ? null : banner("/status: " + describe(status));
  banner(null);
  $("node-role").textContent = roleText(status.body);
  showLog(status.body);
  if (!status.body.cluster) return showCluster(status.body, null);
  const cluster = await call("/cluster");
  // A member whose /cluster fails keeps the last members shown, under a banner.
  if (cluster.ok) showCluster(status.body, cluster.body);
  else if (cluster.status !== 401) banner("/cluster: " + describe(cluster));
}

function startMetrics() {
  let stop = null;
  stop = every(METRICS_EVERY_MS, async () => {
    if (signedOut) return;
    if (!(await sampleRates()) && stop) stop();
  });
}

async function start() {
  startSignIn();
  startAppend();
  await pollStatus();
  if (signedOut) return;
  every(STATUS_EVERY_MS, pollStatus);
  startMetrics();
  await Promise.all([startRecords(), startTail(), startConsumers(), startLogs()]);
}

start();
