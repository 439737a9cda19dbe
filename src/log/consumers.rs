//! Named consumers' positions (`PUT /consumers/{name}`): the table and the
//! rules of a change, pure, so that a standalone node (`mode::consumers`,
//! one durable file) and a cluster's state machine (`cluster::consumers`,
//! a control entry applied on every node) decide alike.
//!
//! A position is the next offset a consumer will read, with the time it was
//! set. A change is decided against the table alone (and figures carried in
//! the change: its time, the limit on names), so every node that applies
//! the same changes in the same order holds the same table.
//!
//! Serialised as JSON, in the standalone file and in a cluster's tables and
//! snapshots: `{"by_name":{"<name>":{"offset":N,"updated_ms":T}}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest name, in bytes (names are ASCII).
pub const MAX_NAME_BYTES: usize = 128;

/// The default of `--max-consumers`.
pub const DEFAULT_MAX_CONSUMERS: usize = 10_000;

/// One consumer's stored position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The next offset the consumer reads.
    pub offset: u64,
    /// When the position was last set (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// What a conditional set expects to find stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Unconditional.
    Anything,
    /// No position stored under the name (`"expected": null`).
    Nothing,
    /// This offset stored.
    Offset(u64),
}

/// A change to the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Stores `offset` under `name` at `at_ms` if `expected` holds; a new
    /// name only while fewer than `max` are stored.
    Set {
        name: String,
        offset: u64,
        expected: Expect,
        max: usize,
        at_ms: u64,
    },
    /// Removes `name`.
    Delete { name: String },
}

/// Why a change was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The condition did not hold; what is stored (`None`: nothing).
    #[error("the stored position is {}, not the one expected", stored.map_or("none".to_string(), |s| s.to_string()))]
    Mismatch { stored: Option<u64> },
    /// A new name past the limit.
    #[error("{max} consumers are stored, the limit (--max-consumers); delete one first")]
    Full { max: usize },
    /// No position is stored under the name.
    #[error("no consumer has this name")]
    Unknown,
}

/// A name that is not 1-128 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a consumer name is 1-{MAX_NAME_BYTES} characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
pub struct BadName;

/// Checks a consumer's name.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    match name.len() {
        1..=MAX_NAME_BYTES if name.as_bytes().iter().all(allowed) => Ok(()),
        _ => Err(BadName),
    }
}

/// Every consumer's position, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    #[serde(default)]
    by_name: BTreeMap<String, Position>,
}

impl Positions {
    pub fn get(&self, name: &str) -> Option<Position> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every position, by name in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Position)> {
        self.by_name.iter().map(|(name, p)| (name.as_str(), *p))
    }

    /// Puts `name` at `position` (`None`: removes it), whatever the rules:
    /// a change's effect replayed from a journal, or undone.
    pub fn restore(&mut self, name: String, position: Option<Position>) {
        match position {
            Some(position) => self.by_name.insert(name, position),
            None => self.by_name.remove(&name),
        };
    }

    /// Makes `change` if its rules allow it: the position it stored, or
    /// `None` for a deletion.
    pub fn apply(&mut self, change: &Change) -> Result<Option<Position>, Refusal> {
        match change {
            Change::Set {
                name,
                offset,
                expected,
                max,
                at_ms,
            } => {
                let stored = self.by_name.get(name).map(|p| p.offset);
                let holds = match expected {
                    Expect::Anything => true,
                    Expect::Nothing => stored.is_none(),
                    Expect::Offset(want) => stored == Some(*want),
                };
                if !holds {
                    return Err(Refusal::Mismatch { stored });
                }
                if stored.is_none() && self.by_name.len() >= *max {
                    return Err(Refusal::Full { max: *max });
                }
                let position = Position {
                    offset: *offset,
                    updated_ms: *at_ms,
                };
                self.by_name.insert(name.clone(), position);
                Ok(Some(position))
            }
            Change::Delete { name } => match self.by_name.remove(name) {
                Some(_) => Ok(None),
                None => Err(Refusal::Unknown),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set(name: &str, offset: u64, expected: Expect) -> Change {
        Change::Set {
            name: name.into(),
            offset,
            expected,
            max: 2,
            at_ms: 7,
        }
    }

    #[test]
    fn names_are_1_to_128_safe_characters() {
        for good in ["a", "billing-v2", "A.b_c-9", &"x".repeat(128)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a%2F", &"x".repeat(129)] {
            assert_eq!(check_name(bad), Err(BadName), "{bad}");
        }
    }

    #[test]
    fn a_conditional_set_needs_the_stored_offset() {
        let mut t = Positions::default();
        assert_eq!(
            t.apply(&set("a", 5, Expect::Offset(1))),
            Err(Refusal::Mismatch { stored: None })
        );
        assert_eq!(
            t.apply(&set("a", 5, Expect::Nothing)),
            Ok(Some(Position {
                offset: 5,
                updated_ms: 7
            }))
        );
        assert_eq!(
            t.apply(&set("a", 6, Expect::Nothing)),
            Err(Refusal::Mismatch { stored: Some(5) })
        );
        assert_eq!(
            t.apply(&set("a", 6, Expect::Offset(4))),
            Err(Refusal::Mismatch { stored: Some(5) })
        );
        assert!(t.apply(&set("a", 6, Expect::Offset(5))).is_ok());
        assert!(
            t.apply(&set("a", 2, Expect::Anything)).is_ok(),
            "a position may go back"
        );
        assert_eq!(t.get("a").unwrap().offset, 2);
    }

    #[test]
    fn new_names_stop_at_the_limit_but_stored_ones_still_move() {
        let mut t = Positions::default();
        t.apply(&set("a", 1, Expect::Anything)).unwrap();
        t.apply(&set("b", 1, Expect::Anything)).unwrap();
        assert_eq!(t.apply(&set("c", 1, Expect::Anything)), Err(Refusal::Full { max: 2 }));
        assert!(t.apply(&set("b", 9, Expect::Anything)).is_ok());
        t.apply(&Change::Delete { name: "a".into() }).unwrap();
        assert!(t.apply(&set("c", 1, Expect::Anything)).is_ok());
        assert_eq!(t.iter().map(|(n, _)| n).collect::<Vec<_>>(), vec!["b", "c"]);
    }

    #[test]
    fn deleting_an_unknown_name_is_refused() {
        let mut t = Positions::default();
        assert_eq!(t.apply(&Change::Delete { name: "a".into() }), Err(Refusal::Unknown));
    }

    #[test]
    fn the_table_reads_back_what_it_wrote() {
        let mut t = Positions::default();
        t.apply(&set("a", 3, Expect::Anything)).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"by_name":{"a":{"offset":3,"updated_ms":7}}}"#);
        assert_eq!(serde_json::from_str::<Positions>(&json).unwrap(), t);
        assert_eq!(serde_json::from_str::<Positions>("{}").unwrap(), Positions::default());
    }
}
