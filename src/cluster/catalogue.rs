//! The catalogue of a cluster's named logs, kept by group 0 (the cluster
//! group, whose log is the default log): which logs exist, their settings,
//! the Raft group each is and the nodes that hold its replicas.
//!
//! A change is a control entry in group 0's log, replicated like a record
//! and applied on every node into `Tables::catalogue` (so the tables file
//! and snapshots carry it, and a retention purge of the entries loses
//! nothing), exactly as consumer positions are (`consumers`):
//!
//! ```text
//! {"raft":"catalogue","change":{"create":{"name":..,"settings":{..},"nodes":[..],"max_logs":..}}}
//! {"raft":"catalogue","change":{"settings":{"name":..,"settings":{..}}}}
//! {"raft":"catalogue","change":{"delete":{"name":..}}}
//! {"raft":"catalogue","change":{"move":{"name":..,"group":..,"from":..,"to":..}}}
//! {"raft":"catalogue","change":{"moved":{"name":..,"group":..,"from":..}}}
//! ```
//!
//! A move (`moves`) puts `to` in `from`'s place among a log's nodes and
//! marks `from` leaving; the group's leader then adds `to` and takes
//! `from` out of the group, and group 0's leader, once a replica reports
//! that membership committed, applies `moved`: `from` is then a former
//! holder, drops its replica and is never placed on that log again.
//!
//! Whether a change is made is decided when it is applied, from the
//! catalogue and the entry alone: two racing creates of one name have one
//! winner on every node. A create takes the next group id, which is never
//! given again: a log deleted and created again is a new group, so that
//! replicas and messages of the old one never reach it. Settings are
//! carried as the API layer wrote them (JSON): the cluster compares them,
//! it does not read them. Where replicas go is decided by the proposer
//! (`place`) and only checked here.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::node::Cluster;
use super::types::{NodeId, UserRecord};
use crate::log::attributes::CONTROL;

/// The `raft` word of a catalogue entry.
pub(super) const KIND: &str = "catalogue";

/// Group 0 is the cluster group; named logs' groups are numbered from 1.
pub const FIRST_GROUP: u64 = 1;

/// How many logs move at once at most for balance (each move copies a log
/// to a node: a joining node is not swamped).
const MOVES_AT_ONCE: usize = 2;

/// What group 0 knows of the named logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    /// The id the next created log's group takes; only ever raised.
    #[serde(default)]
    pub next_group: u64,
    pub logs: BTreeMap<String, PlacedLog>,
    /// The id (term, index) of the last catalogue entry applied: an entry
    /// at or below its index is not applied again (a start that found the
    /// log short of what the tables say was applied applies the entries
    /// after the log's end again, on tables that already hold them).
    #[serde(default)]
    pub applied: Option<(u64, u64)>,
}

/// One named log in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedLog {
    pub group: u64,
    /// As the API layer wrote them.
    pub settings: serde_json::Value,
    /// The nodes holding its replicas, in the order of preference for its
    /// leader; the first initializes the group (`initializer`).
    pub nodes: Vec<NodeId>,
    /// Nodes a move took out of `nodes` that may still be voters of the
    /// group: they keep their replica until the move is reported done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaving: Vec<NodeId>,
    /// Nodes that held a replica once and gave it up: never placed here
    /// again (their replica's votes went with its directory, and a new one
    /// under the same id could vote twice in a term).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former: Vec<NodeId>,
}

impl PlacedLog {
    /// Whether `node` holds a replica: placed there, or leaving it.
    pub fn held_by(&self, node: NodeId) -> bool {
        self.nodes.contains(&node) || self.leaving.contains(&node)
    }

    /// The node that makes the group's first membership: the first placed,
    /// as long as no move ever happened (a node a move brought in starts
    /// empty and must wait for the group's leader, never found a group).
    pub fn initializer(&self) -> Option<NodeId> {
        match self.leaving.is_empty() && self.former.is_empty() {
            true => self.nodes.first().copied(),
            false => None,
        }
    }
}

/// A change to the catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogueChange {
    Create {
        name: String,
        settings: serde_json::Value,
        nodes: Vec<NodeId>,
        /// The proposing leader's `--max-logs`.
        max_logs: usize,
    },
    Settings {
        name: String,
        settings: serde_json::Value,
        /// The settings the change was made from: another change applied
        /// in between refuses this one (`Refusal::Changed`), so that two
        /// racing changes of different fields do not lose one.
        #[serde(default)]
        expected: Option<serde_json::Value>,
    },
    Delete {
        name: String,
    },
    /// `to` takes `from`'s place among the log's replicas; `from` is
    /// leaving until `Moved`. `from` may be a node a move brought that
    /// never caught up (dead): it is then leaving too.
    Move {
        name: String,
        group: u64,
        from: NodeId,
        to: NodeId,
    },
    /// The group's membership no longer holds `from`: it may drop its replica.
    Moved {
        name: String,
        group: u64,
        from: NodeId,
    },
}

/// Why a change was refused when it was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("log {name} exists with other settings")]
    Exists { name: String, settings: serde_json::Value },
    #[error("no log is named {0}")]
    NotFound(String),
    #[error("the cluster holds {max} logs, the most --max-logs allows")]
    TooMany { max: usize },
    #[error("cannot place the log's replicas: {0}")]
    Placement(String),
    #[error("log {0}'s settings changed meanwhile")]
    Changed(String),
    #[error("catalogue entry {0} was applied before")]
    Replayed(u64),
}

/// What applying a change gave: the log as it now stands (for a create,
/// whether this entry made it), or why it was refused.
pub type Outcome = Result<(bool, PlacedLog), Refusal>;

impl Catalogue {
    /// Applies the entry `(term, index)` once (see `applied`). An entry
    /// this version cannot read, or one at an index already applied from
    /// another term (this node's history and the cluster's differ), is an
    /// error that stops the node's Raft core: skipping it would leave this
    /// node's catalogue unlike the others'.
    pub fn apply_at(
        &mut self,
        (term, index): (u64, u64),
        change: Result<&CatalogueChange, &String>,
        members: &BTreeSet<NodeId>,
    ) -> Result<Outcome, String> {
        if let Some((applied_term, applied_index)) = self.applied
            && applied_index >= index
        {
            return match applied_index > index || applied_term == term {
                true => Ok(Err(Refusal::Replayed(index))),
                false => Err(format!(
                    "catalogue entry {index} of term {term} replaces one applied from term {applied_term}"
                )),
            };
        }
        let change = change.map_err(|unknown| {
            format!("catalogue entry {index} is of a kind this version cannot read (upgrade this node): {unknown}")
        })?;
        self.applied = Some((term, index));
        Ok(self.apply(change, members))
    }

    /// Applies `change`; `members` are group 0's members as the entry
    /// found them (replicas go on members only).
    pub fn apply(&mut self, change: &CatalogueChange, members: &BTreeSet<NodeId>) -> Outcome {
        match change {
            CatalogueChange::Create {
                name,
                settings,
                nodes,
                max_logs,
            } => {
                if let Some(held) = self.logs.get(name) {
                    return match &held.settings == settings {
                        true => Ok((false, held.clone())),
                        false => Err(Refusal::Exists {
                            name: name.clone(),
                            settings: held.settings.clone(),
                        }),
                    };
                }
                if self.logs.len() >= *max_logs {
                    return Err(Refusal::TooMany { max: *max_logs });
                }
                check_placement(nodes, members)?;
                let group = self.next_group.max(FIRST_GROUP);
                self.next_group = group + 1;
                let placed = PlacedLog {
                    group,
                    settings: settings.clone(),
                    nodes: nodes.clone(),
                    leaving: Vec::new(),
                    former: Vec::new(),
                };
                self.logs.insert(name.clone(), placed.clone());
                Ok((true, placed))
            }
            CatalogueChange::Settings {
                name,
                settings,
                expected,
            } => {
                let placed = self.logs.get_mut(name).ok_or_else(|| Refusal::NotFound(name.clone()))?;
                if expected.as_ref().is_some_and(|expected| *expected != placed.settings) {
                    return Err(Refusal::Changed(name.clone()));
                }
                placed.settings = settings.clone();
                Ok((false, placed.clone()))
            }
            CatalogueChange::Delete { name } => {
                let placed = self.logs.remove(name).ok_or_else(|| Refusal::NotFound(name.clone()))?;
                Ok((false, placed))
            }
            CatalogueChange::Move { name, group, from, to } => {
                let placed = self.log_of_group(name, *group)?;
                let Some(at) = placed.nodes.iter().position(|n| n == from) else {
                    return Err(Refusal::Placement(format!("node {from} holds no replica of {name}")));
                };
                if placed.held_by(*to) || placed.former.contains(to) || !members.contains(to) {
                    return Err(Refusal::Placement(format!(
                        "node {to} cannot take a replica of {name}: it holds one, held one, or is not a member"
                    )));
                }
                placed.nodes[at] = *to;
                placed.leaving.push(*from);
                Ok((false, placed.clone()))
            }
            CatalogueChange::Moved { name, group, from } => {
                let placed = self.log_of_group(name, *group)?;
                if !placed.leaving.contains(from) {
                    return Err(Refusal::Placement(format!("node {from} is not leaving {name}")));
                }
                placed.leaving.retain(|n| n != from);
                placed.former.push(*from);
                Ok((false, placed.clone()))
            }
        }
    }

    /// Log `name` while it is still group `group` (not deleted and made again meanwhile).
    fn log_of_group(&mut self, name: &str, group: u64) -> Result<&mut PlacedLog, Refusal> {
        match self.logs.get_mut(name) {
            Some(placed) if placed.group == group => Ok(placed),
            _ => Err(Refusal::NotFound(name.to_string())),
        }
    }

    /// Where `name`'s replica on `from` goes: the voter among `members`
    /// holding the fewest replicas that never held one of this log.
    pub fn place_move(&self, name: &str, from: NodeId, members: &BTreeSet<NodeId>) -> Result<NodeId, Refusal> {
        let placed = self.logs.get(name).ok_or_else(|| Refusal::NotFound(name.to_string()))?;
        let held = self.replicas_held();
        members
            .iter()
            .copied()
            .filter(|n| *n != from && !placed.held_by(*n) && !placed.former.contains(n))
            .min_by_key(|n| (held.get(n).copied().unwrap_or_default().0, tie(name, *n)))
            .ok_or_else(|| {
                Refusal::Placement(format!(
                    "no node can take node {from}'s replica of {name}: each of the other {} holds or held one",
                    members.len().saturating_sub(1)
                ))
            })
    }

    /// A move that evens out the replicas among `voters` (a node joined, or
    /// one came back empty): from the voter holding the most to the one
    /// holding the fewest when they differ by two or more, a log the first
    /// is preferred leader of if it can (so that the new node gets leaders
    /// too). None while `MOVES_AT_ONCE` moves are under way, or when even.
    pub fn balancing_move(&self, voters: &BTreeSet<NodeId>) -> Option<CatalogueChange> {
        self.balancing_moves(voters).into_iter().next()
    }

    /// Every move `balancing_move` could make, best first (the proposer
    /// takes the first whose group was founded).
    pub fn balancing_moves(&self, voters: &BTreeSet<NodeId>) -> Vec<CatalogueChange> {
        if self.logs.values().filter(|p| !p.leaving.is_empty()).count() >= MOVES_AT_ONCE {
            return Vec::new();
        }
        // Placed, not leaving: a replica on its way out no longer counts for its node.
        let mut placed_on: BTreeMap<NodeId, usize> = BTreeMap::new();
        for node in self.logs.values().flat_map(|p| p.nodes.iter()) {
            *placed_on.entry(*node).or_default() += 1;
        }
        let count = |n: &NodeId| placed_on.get(n).copied().unwrap_or_default();
        let (Some(most), Some(fewest)) = (
            voters
                .iter()
                .max_by_key(|n| (count(n), std::cmp::Reverse(**n)))
                .copied(),
            voters.iter().min_by_key(|n| (count(n), **n)).copied(),
        ) else {
            return Vec::new();
        };
        if count(&most) < count(&fewest) + 2 {
            return Vec::new();
        }
        let mut movable: Vec<(&String, &PlacedLog)> = self
            .logs
            .iter()
            .filter(|(_, p)| {
                p.leaving.is_empty() && p.nodes.contains(&most) && !p.held_by(fewest) && !p.former.contains(&fewest)
            })
            .collect();
        movable.sort_by_key(|(name, p)| (p.nodes.first() != Some(&most), name.as_str()));
        let moves = movable.into_iter().map(|(name, placed)| CatalogueChange::Move {
            name: name.clone(),
            group: placed.group,
            from: most,
            to: fewest,
        });
        moves.collect()
    }

    /// How many replicas each node holds.
    fn replicas_held(&self) -> BTreeMap<NodeId, (usize, usize)> {
        let mut held: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new();
        for placed in self.logs.values() {
            for (i, node) in placed.nodes.iter().enumerate() {
                let counts = held.entry(*node).or_default();
                counts.0 += 1;
                counts.1 += usize::from(i == 0);
            }
            for node in &placed.leaving {
                held.entry(*node).or_default().0 += 1;
            }
        }
        held
    }

    /// Where a new log `name` with `replicas` replicas goes among
    /// `members`: the nodes holding the fewest replicas, ties broken by a
    /// hash of the name and the node (so that logs created from one view
    /// spread rather than pile on the lowest id); first the one that
    /// initializes (and most often leads) fewest.
    pub fn place(&self, name: &str, replicas: usize, members: &BTreeSet<NodeId>) -> Result<Vec<NodeId>, Refusal> {
        if replicas == 0 || replicas > members.len() {
            return Err(Refusal::Placement(format!(
                "{replicas} replicas asked, {} nodes in the cluster",
                members.len()
            )));
        }
        let held = self.replicas_held();
        let count = |node: &NodeId| held.get(node).copied().unwrap_or_default();
        let mut chosen: Vec<NodeId> = members.iter().copied().collect();
        chosen.sort_by_key(|node| (count(node).0, tie(name, *node)));
        chosen.truncate(replicas);
        chosen.sort_by_key(|node| (count(node).1, tie(name, *node)));
        Ok(chosen)
    }
}

/// A hash of `(name, node)` that is the same on every node and build.
fn tie(name: &str, node: NodeId) -> u64 {
    // FNV-1a: stable, unlike std's hasher, whose seed and algorithm may change.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain(node.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn check_placement(nodes: &[NodeId], members: &BTreeSet<NodeId>) -> Result<(), Refusal> {
    let distinct: BTreeSet<&NodeId> = nodes.iter().collect();
    if nodes.is_empty() || distinct.len() != nodes.len() {
        return Err(Refusal::Placement(format!(
            "replicas on {nodes:?}: one a node, at least one"
        )));
    }
    match nodes.iter().find(|n| !members.contains(n)) {
        Some(stranger) => Err(Refusal::Placement(format!("node {stranger} is not a member"))),
        None => Ok(()),
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    raft: String,
    change: CatalogueChange,
}

/// The control entry that proposes `change`.
fn entry(change: CatalogueChange) -> UserRecord {
    let entry = Entry {
        raft: KIND.to_string(),
        change,
    };
    // Serializing our own plain types into memory cannot fail.
    let value = serde_json::to_vec(&entry).unwrap_or_default();
    UserRecord::new(CONTROL, 0, Bytes::from(value))
}

/// Whether `entry` is a catalogue change (see `log_store`: synced whatever `--fsync` says).
pub(super) fn is_catalogue_entry(entry: &super::types::Entry) -> bool {
    match &entry.payload {
        openraft::EntryPayload::Normal(record) => change_of(record).is_some(),
        _ => false,
    }
}

/// The change a record carries, if it is a catalogue entry; a catalogue
/// entry whose change this version cannot read (a newer node's) is still
/// one, applied as nothing (never taken for a record).
pub(super) fn change_of(record: &UserRecord) -> Option<Result<CatalogueChange, String>> {
    if record.attributes & CONTROL == 0 {
        return None;
    }
    #[derive(Deserialize)]
    struct Kind {
        raft: String,
        change: serde_json::Value,
    }
    let entry: Kind = serde_json::from_slice(&record.value).ok()?;
    if entry.raft != KIND {
        return None;
    }
    Some(serde_json::from_value(entry.change.clone()).map_err(|e| format!("{e}: {}", entry.change)))
}

impl Cluster {
    /// Proposes `change` on group 0 and answers how it was decided once it
    /// is applied here. Errors are a write's: not the leader, an unknown
    /// outcome.
    pub async fn change_catalogue(&self, change: CatalogueChange) -> Result<Outcome, ClusterError> {
        let index = self.write(vec![entry(change)]).await?.offset;
        self.inner.visibility.take_catalogue_outcome(index).ok_or_else(|| {
            ClusterError::OutcomeUnknown(format!(
                "the change was applied at index {index}, but its outcome was no longer kept"
            ))
        })
    }

    /// The catalogue as this node applied it.
    pub fn catalogue(&self) -> Catalogue {
        self.inner.visibility.catalogue()
    }

    /// Turns at every catalogue change this node applies (or installs).
    pub fn catalogue_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.visibility.catalogue_changes()
    }

    /// Log `name` as the catalogue places it (without copying the rest).
    pub fn placed(&self, name: &str) -> Option<PlacedLog> {
        self.inner.visibility.placed(name)
    }

    /// `f` of log `name` as the catalogue places it, without a copy (a
    /// `GET /logs` asks this of every log).
    pub fn with_placed<T>(&self, name: &str, f: impl FnOnce(&PlacedLog) -> T) -> Option<T> {
        self.inner.visibility.with_placed(name, f)
    }

    /// Group 0's voters: where new replicas go, but those being drained. Not its learners: a learner is a node joining
    /// (it may never finish) or one half removed, and a log placed on it alone, or first, would
    /// wait for it. (The check at apply time still takes any member: an entry decides the same on
    /// every node and every version.)
    pub fn voter_ids(&self) -> BTreeSet<NodeId> {
        let draining = self.draining();
        self.members()
            .into_iter()
            .filter(|(id, (_, voter))| *voter && !draining.contains(id))
            .map(|(id, _)| id)
            .collect()
    }

    /// How many voters group 0 has (those being drained too).
    pub fn voter_count(&self) -> usize {
        self.members().values().filter(|(_, voter)| *voter).count()
    }

    /// The nodes a drain is emptying (see `Inner::draining`).
    pub(super) fn draining(&self) -> BTreeSet<NodeId> {
        let marks = self
            .inner
            .draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let live = marks
            .iter()
            .filter(|(_, at)| at.elapsed() < super::moves::DRAIN_MARK_LASTS);
        live.map(|(id, _)| *id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, settings: serde_json::Value, nodes: &[NodeId]) -> CatalogueChange {
        CatalogueChange::Create {
            name: name.into(),
            settings,
            nodes: nodes.to_vec(),
            max_logs: 3,
        }
    }

    fn members() -> BTreeSet<NodeId> {
        [1, 2, 3].into()
    }

    #[test]
    fn a_name_is_created_once_and_a_recreated_one_is_a_new_group() {
        let mut c = Catalogue::default();
        let a = serde_json::json!({"replicas": 3});
        let (made, placed) = c.apply(&create("orders", a.clone(), &[1, 2, 3]), &members()).unwrap();
        assert!(made);
        assert_eq!(placed.group, FIRST_GROUP);
        let (made, again) = c.apply(&create("orders", a.clone(), &[2, 3, 1]), &members()).unwrap();
        assert!(!made, "the same settings find it");
        assert_eq!(again.nodes, vec![1, 2, 3], "where it is stays");
        let other = c.apply(&create("orders", serde_json::json!({"replicas": 1}), &[1]), &members());
        assert!(matches!(other, Err(Refusal::Exists { .. })), "{other:?}");
        c.apply(&CatalogueChange::Delete { name: "orders".into() }, &members())
            .unwrap();
        let (_, recreated) = c.apply(&create("orders", a, &[1, 2, 3]), &members()).unwrap();
        assert_eq!(recreated.group, FIRST_GROUP + 1, "group ids are never given twice");
        assert_eq!(
            c.apply(&CatalogueChange::Delete { name: "nope".into() }, &members()),
            Err(Refusal::NotFound("nope".into()))
        );
    }

    #[test]
    fn replicas_go_on_distinct_members_and_the_count_is_bounded() {
        let mut c = Catalogue::default();
        let s = serde_json::json!({});
        for bad in [&[1, 1][..], &[], &[1, 9]] {
            let refused = c.apply(&create("a", s.clone(), bad), &members());
            assert!(matches!(refused, Err(Refusal::Placement(_))), "{bad:?}: {refused:?}");
        }
        for name in ["a", "b", "c"] {
            c.apply(&create(name, s.clone(), &[1]), &members()).unwrap();
        }
        assert_eq!(
            c.apply(&create("d", s, &[1]), &members()),
            Err(Refusal::TooMany { max: 3 })
        );
    }

    #[test]
    fn placement_spreads_replicas_and_first_places() {
        let mut c = Catalogue::default();
        let all: BTreeSet<NodeId> = [10, 20, 30, 40, 50].into();
        for i in 0..20 {
            let name = format!("log-{i}");
            let nodes = c.place(&name, 3, &all).unwrap();
            let change = CatalogueChange::Create {
                name,
                settings: serde_json::json!({}),
                nodes,
                max_logs: 100,
            };
            c.apply(&change, &all).unwrap();
        }
        let held = c.replicas_held();
        assert!(held.values().all(|(r, _)| *r == 12), "{held:?}");
        assert!(held.values().all(|(_, first)| *first == 4), "{held:?}");
        assert!(matches!(c.place("x", 6, &all), Err(Refusal::Placement(_))));
    }

    #[test]
    fn an_entry_round_trips_and_a_users_record_is_never_one() {
        let change = CatalogueChange::Delete { name: "a".into() };
        let record = entry(change.clone());
        assert!(super::super::consumers::is_consumer_entry(&record.value));
        assert_eq!(change_of(&record), Some(Ok(change)));
        let plain = UserRecord::new(0, 1, record.value.clone());
        assert_eq!(change_of(&plain), None);
        let newer = UserRecord::new(
            CONTROL,
            1,
            Bytes::from_static(br#"{"raft":"catalogue","change":{"split":{}}}"#),
        );
        assert!(
            matches!(change_of(&newer), Some(Err(_))),
            "a newer kind is still a catalogue entry"
        );
    }

    #[test]
    fn an_entry_applied_again_changes_nothing() {
        let mut c = Catalogue::default();
        let first = create("a", serde_json::json!({}), &[1]);
        c.apply_at((2, 7), Ok(&first), &members()).unwrap().unwrap();
        let after_once = c.clone();
        assert_eq!(
            c.apply_at((2, 7), Ok(&first), &members()),
            Ok(Err(Refusal::Replayed(7)))
        );
        assert_eq!(c, after_once, "a replay takes no new group id");
        assert!(
            c.apply_at((3, 7), Ok(&first), &members()).is_err(),
            "another term's entry at an applied index is a history that differs"
        );
        let deleted = CatalogueChange::Delete { name: "a".into() };
        c.apply_at((2, 9), Ok(&deleted), &members()).unwrap().unwrap();
        assert!(c.logs.is_empty());
        assert!(c.apply_at((2, 10), Err(&"unknown".to_string()), &members()).is_err());
        assert_eq!(c.applied, Some((2, 9)), "an entry not applied is not recorded");
    }

    #[test]
    fn a_move_puts_the_new_node_in_place_and_the_old_one_never_comes_back() {
        let mut c = Catalogue::default();
        let all: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        c.apply(&create("a", serde_json::json!({}), &[1, 2, 3]), &all).unwrap();
        let group = c.logs["a"].group;
        assert_eq!(c.logs["a"].initializer(), Some(1));
        assert_eq!(c.place_move("a", 1, &all), Ok(4), "the one node without a replica");
        let change = |from, to| CatalogueChange::Move {
            name: "a".into(),
            group,
            from,
            to,
        };
        let (_, moved) = c.apply(&change(1, 4), &all).unwrap();
        assert_eq!((moved.nodes.clone(), moved.leaving.clone()), (vec![4, 2, 3], vec![1]));
        assert!(moved.held_by(1) && moved.held_by(4));
        assert_eq!(
            moved.initializer(),
            None,
            "a node a move brought never founds the group"
        );
        assert!(
            matches!(c.apply(&change(2, 1), &all), Err(Refusal::Placement(_))),
            "not onto a node still leaving"
        );
        let done = CatalogueChange::Moved {
            name: "a".into(),
            group,
            from: 1,
        };
        let (_, after) = c.apply(&done, &all).unwrap();
        assert_eq!((after.leaving.is_empty(), after.former.clone()), (true, vec![1]));
        assert!(!after.held_by(1));
        assert!(c.apply(&done, &all).is_err(), "a move ends once");
        assert!(
            matches!(c.apply(&change(2, 1), &all), Err(Refusal::Placement(_))),
            "a former holder is not placed again"
        );
        assert!(
            matches!(c.place_move("a", 2, &all), Err(Refusal::Placement(_))),
            "nowhere left"
        );
        // A move whose new node died before it caught up is moved on: both are leaving.
        let five: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        let (_, retargeted) = c.apply(&change(4, 5), &five).unwrap();
        assert_eq!((retargeted.nodes, retargeted.leaving), (vec![5, 2, 3], vec![4]));
        let stale = CatalogueChange::Move {
            name: "a".into(),
            group: group + 1,
            from: 2,
            to: 1,
        };
        assert_eq!(
            c.apply(&stale, &all),
            Err(Refusal::NotFound("a".into())),
            "another incarnation of the name"
        );
    }

    #[test]
    fn a_joined_node_is_given_replicas_until_the_counts_are_even() {
        let mut c = Catalogue::default();
        let three: BTreeSet<NodeId> = [1, 2, 3].into();
        for i in 0..3 {
            c.apply(&create(&format!("l{i}"), serde_json::json!({}), &[1, 2, 3]), &three)
                .unwrap();
        }
        assert_eq!(c.balancing_move(&three), None, "even");
        let four: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        let mut moves = 0;
        while let Some(change) = c.balancing_move(&four) {
            let CatalogueChange::Move { name, group, from, to } = change.clone() else {
                panic!("{change:?}")
            };
            assert_eq!(to, 4);
            c.apply(&change, &four).unwrap();
            c.apply(&CatalogueChange::Moved { name, group, from }, &four).unwrap();
            moves += 1;
            assert!(moves <= 3, "it settles");
        }
        let held = c.replicas_held();
        let counts: Vec<usize> = four
            .iter()
            .map(|n| held.get(n).map(|h| h.0).unwrap_or_default())
            .collect();
        assert_eq!(moves, 2, "{counts:?}");
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
        assert!(held[&4].1 >= 1, "the new node is preferred leader of some: {held:?}");
    }

    #[test]
    fn a_settings_change_made_from_stale_settings_is_refused() {
        let mut c = Catalogue::default();
        let old = serde_json::json!({"retention_ms": 1});
        c.apply(&create("a", old.clone(), &[1]), &members()).unwrap();
        let change = |settings: serde_json::Value| CatalogueChange::Settings {
            name: "a".into(),
            settings,
            expected: Some(old.clone()),
        };
        c.apply(&change(serde_json::json!({"retention_ms": 2})), &members())
            .unwrap();
        assert_eq!(
            c.apply(&change(serde_json::json!({"retention_bytes": 5})), &members()),
            Err(Refusal::Changed("a".into()))
        );
    }
}
