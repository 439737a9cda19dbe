// The cluster card: what this node is (standalone, a --follow replica or a
// cluster member) and, for a member, every member with its role, match
// offset, lag behind the leader and whether the leader hears from it.
// Rows are kept and updated in place, so nothing jumps as polls arrive.

import { $, el, clear, facts } from "./dom.js";

const rows = new Map();

function nodeKind(status) {
  if (status.cluster) return status.cluster.leader_id === status.cluster.node_id ? "cluster leader" : "cluster follower";
  if (status.replication_state) return "replica";
  return "standalone";
}

/** The badge in the page's header. */
export function roleText(status) {
  return nodeKind(status);
}

function nodeFacts(status) {
  const pairs = [["This node", nodeKind(status)], ["Writable", status.writable ? "yes" : "no"]];
  if (status.storage_error) pairs.push(["Storage error", status.storage_error]);
  if (status.replication_state) {
    pairs.push(["Following", status.leader], ["Replication", status.replication_state]);
    pairs.push(["Leader next offset", status.leader_next_offset], ["Lag (records)", status.lag]);
    if (status.replication_error) pairs.push(["Replication error", status.replication_error]);
  }
  return pairs;
}

function memberRow(id) {
  let row = rows.get(id);
  if (!row) {
    const cells = Array.from({ length: 7 }, (_, i) => el("td", { class: i === 4 || i === 5 ? "num" : null }));
    row = el("tr", { "data-member": id }, cells);
    rows.set(id, row);
  }
  return row;
}

function setCell(cell, content) {
  if (typeof content === "string" || typeof content === "number") {
    if (cell.childElementCount === 0 && cell.textContent === String(content)) return;
    cell.textContent = String(content);
  } else {
    cell.replaceChildren(content);
  }
}

function stateBadge(member) {
  const problem = member.problem ? el("span", { class: "problem" }, member.problem) : null;
  if (member.reachable === true) return el("span", {}, el("span", { class: "badge ok" }, "up"), problem);
  if (member.reachable === false) return el("span", {}, el("span", { class: "badge bad" }, "down"), problem);
  return el("span", {}, el("span", { class: "badge", title: "only the leader knows who it hears from" }, "unknown"), problem);
}

function renderMembers(cluster) {
  const table = $("members");
  const body = table.tBodies[0];
  const leader = cluster.members.find((m) => m.id === cluster.leader_id);
  const leaderMatch = leader ? leader.match_offset : null;
  const seen = new Set();
  for (const member of cluster.members) {
    seen.add(member.id);
    const row = memberRow(member.id);
    const cells = row.cells;
    const isLeader = member.id === cluster.leader_id;
    setCell(cells[0], String(member.id) + (member.id === cluster.node_id ? " (this)" : ""));
    setCell(cells[1], stateBadge(member));
    setCell(cells[2], isLeader ? el("span", { class: "badge lead" }, "leader") : "follower");
    setCell(cells[3], member.voter ? "voter" : "learner");
    setCell(cells[4], member.match_offset === null ? "–" : member.match_offset);
    const lag = leaderMatch !== null && member.match_offset !== null ? Math.max(0, leaderMatch - member.match_offset) : "–";
    setCell(cells[5], lag);
    setCell(cells[6], el("a", { href: member.url + "/ui" }, member.url));
    row.classList.toggle("down", member.reachable === false);
    row.dataset.state = member.reachable === true ? "up" : member.reachable === false ? "down" : "unknown";
    if (row.parentNode !== body) body.append(row);
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  table.hidden = false;
}

/** Shows one poll: `/status`, and `/cluster` on a member (else null). */
export function showCluster(status, cluster) {
  const pairs = nodeFacts(status);
  const note = $("cluster-note");
  if (!cluster) {
    facts($("cluster-facts"), pairs);
    $("members").hidden = true;
    note.textContent = status.replication_state
      ? "A read-only replica: it copies its leader's log and sends writes there."
      : "A standalone node: no cluster (start with --peers for one).";
    return;
  }
  pairs.push(["Term", cluster.term], ["Leader", cluster.leader_id === null ? "none (election)" : String(cluster.leader_id)]);
  pairs.push(["Commit offset", cluster.commit_offset], ["Members", cluster.members.length]);
  if (cluster.leader_contact_ms !== undefined) {
    const contact = cluster.leader_contact_ms;
    pairs.push([cluster.leader_id === cluster.node_id ? "Majority heard" : "Leader heard", contact === null ? "never" : contact + " ms ago"]);
  }
  facts($("cluster-facts"), pairs);
  renderMembers(cluster);
  const leads = cluster.leader_id === cluster.node_id;
  clear(note);
  if (!leads && cluster.leader_url) {
    note.append("Only the leader knows who it hears from and how far each member is: ", el("a", { href: cluster.leader_url + "/ui" }, "open the leader's console"), ".");
  }
}
