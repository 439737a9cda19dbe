//! Idempotent producers: per producer id, its epoch, the sequence number it
//! is expected to send next, and the sequence ranges and first offsets of
//! its last `KEPT_REQUESTS` appends (Kafka's rule: up to 5 requests in
//! flight). `check` says whether an append may go ahead; `record` notes
//! one that did. A function of the appends alone (and their stamps), so a
//! standalone node rebuilds it from the guards its frames carry, and every
//! member of a cluster applying the same entries keeps the same table
//! (`cluster::tables`).
//!
//! Bounded: a producer is forgotten `ttl_ms` after its last append, and the
//! least recently used are forgotten first beyond `max_producers`. A
//! forgotten producer starts again at whatever sequence it sends, so a very
//! late retry of one is appended again (the README says so).
//!
//! Serialized (JSON, in a cluster's tables and snapshots) as the list of
//! producers, least recently used first:
//! `[{"id","epoch","next_seq","last_ms","recent":[[seq,count,first_offset],..]},..]`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::record::ProducerStamp;

/// Appends kept per producer for answering retries.
pub const KEPT_REQUESTS: usize = 5;
/// The metric of producers forgotten to stay within the limits.
pub const EVICTIONS: &str = "distlog_producers_evicted_total";

/// `--producer-ttl-ms` and `--max-producers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerLimits {
    pub ttl_ms: u64,
    pub max_producers: usize,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        ProducerLimits {
            ttl_ms: 7 * 24 * 3600 * 1000,
            max_producers: 100_000,
        }
    }
}

/// Why an append was not appended. `Duplicate` is a success for the client
/// (its records are in the log already, at these offsets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Duplicate {
        first: u64,
        last: u64,
    },
    SequenceGap {
        expected: u64,
    },
    SequenceStale {
        expected: u64,
    },
    Fenced {
        epoch: u32,
    },
    /// The log's last record is not where the append expected it (`None`: no record).
    OffsetMismatch {
        last: Option<u64>,
    },
}

/// One kept append: its first sequence number, how many records, and the
/// first one's offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    seq: u64,
    count: u32,
    first: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Producer {
    epoch: u32,
    next_seq: u64,
    last_ms: u64,
    /// Its key in `Producers::by_use`.
    tick: u64,
    /// Oldest first, at most `KEPT_REQUESTS`.
    recent: Vec<Sent>,
}

/// See the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Kept>", into = "Vec<Kept>")]
pub struct Producers {
    /// Keyed by a per-process seed: the ids are the clients' choice.
    by_id: HashMap<Arc<str>, Producer, foldhash::quality::RandomState>,
    /// Least recently used first.
    by_use: BTreeMap<u64, Used>,
    tick: u64,
}

/// A producer in `Producers::by_use`: its id (the key's `Arc` in `by_id`)
/// and its `last_ms`, so that eviction sees whether the least recently
/// used one expired without looking it up.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Used {
    id: Arc<str>,
    last_ms: u64,
}

impl Producers {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether an append stamped `p` at `now_ms` may be appended (`None`),
    /// or why not.
    pub fn check(&self, p: &ProducerStamp, now_ms: u64, limits: &ProducerLimits) -> Option<Refusal> {
        let known = self
            .by_id
            .get(p.id.as_str())
            .filter(|known| !expired(known.last_ms, now_ms, limits))?;
        if p.epoch < known.epoch {
            return Some(Refusal::Fenced { epoch: known.epoch });
        }
        if p.epoch > known.epoch {
            // A new epoch starts again at 0.
            return (p.seq != 0).then_some(Refusal::SequenceGap { expected: 0 });
        }
        if let Some(sent) = known.recent.iter().find(|s| s.seq == p.seq && s.count == p.count) {
            return Some(Refusal::Duplicate {
                first: sent.first,
                last: sent.first + u64::from(sent.count.max(1) - 1),
            });
        }
        match p.seq.cmp(&known.next_seq) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(Refusal::SequenceGap {
                expected: known.next_seq,
            }),
            std::cmp::Ordering::Less => Some(Refusal::SequenceStale {
                expected: known.next_seq,
            }),
        }
    }

    /// Notes that the append stamped `p` was appended from offset `first`
    /// at `now_ms` (it passed `check`). Returns how many producers were
    /// forgotten to stay within `limits`.
    pub fn record(&mut self, p: &ProducerStamp, first: u64, now_ms: u64, limits: &ProducerLimits) -> u64 {
        self.tick += 1;
        let tick = self.tick;
        let sent = Sent {
            seq: p.seq,
            count: p.count,
            first,
        };
        // One lookup: the id's `Arc` comes back from `by_use`.
        match self.by_id.get_mut(p.id.as_str()) {
            Some(known) => {
                let id = match self.by_use.remove(&known.tick) {
                    Some(used) => used.id,
                    None => {
                        debug_assert!(false, "every producer is in by_use");
                        Arc::from(p.id.as_str())
                    }
                };
                if known.epoch != p.epoch || expired(known.last_ms, now_ms, limits) {
                    known.recent.clear();
                }
                known.epoch = p.epoch;
                known.next_seq = p.next_seq();
                known.last_ms = known.last_ms.max(now_ms);
                known.tick = tick;
                if known.recent.len() >= KEPT_REQUESTS {
                    known.recent.remove(0);
                }
                known.recent.push(sent);
                let last_ms = known.last_ms;
                self.by_use.insert(tick, Used { id, last_ms });
            }
            None => {
                let id: Arc<str> = Arc::from(p.id.as_str());
                let mut recent = Vec::with_capacity(KEPT_REQUESTS);
                recent.push(sent);
                let producer = Producer {
                    epoch: p.epoch,
                    next_seq: p.next_seq(),
                    last_ms: now_ms,
                    tick,
                    recent,
                };
                self.by_use.insert(
                    tick,
                    Used {
                        id: id.clone(),
                        last_ms: now_ms,
                    },
                );
                self.by_id.insert(id, producer);
            }
        }
        debug_assert_eq!(self.by_id.len(), self.by_use.len());
        self.evict(now_ms, limits)
    }

    /// Forgets the least recently used producers while there are more than
    /// the limit or they are past their time. Returns how many.
    pub fn evict(&mut self, now_ms: u64, limits: &ProducerLimits) -> u64 {
        let mut evicted = 0;
        while let Some((_, lru)) = self.by_use.first_key_value() {
            let over = self.by_id.len() > limits.max_producers;
            if !over && !expired(lru.last_ms, now_ms, limits) {
                break;
            }
            if let Some((_, lru)) = self.by_use.pop_first() {
                self.by_id.remove(&lru.id);
            }
            evicted += 1;
        }
        if evicted > 0 {
            metrics::counter!(EVICTIONS).increment(evicted);
        }
        evicted
    }

    /// Approximate bytes the table holds in memory (for the limits' docs
    /// and the size test).
    pub fn approximate_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(Arc<str>, Producer)>() + 1;
        let map = self.by_id.capacity() * per_entry;
        let ids: usize = self.by_id.keys().map(|id| id.len() + 16).sum();
        let recent: usize = self
            .by_id
            .values()
            .map(|p| p.recent.capacity() * std::mem::size_of::<Sent>())
            .sum();
        // A B-tree node holds up to 11 entries of (u64, Used) and its edges.
        let by_use = self.by_use.len() * (std::mem::size_of::<(u64, Used)>() * 3 / 2 + 8);
        map + ids + recent + by_use
    }
}

fn expired(last_ms: u64, now_ms: u64, limits: &ProducerLimits) -> bool {
    last_ms.saturating_add(limits.ttl_ms) < now_ms
}

pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        EVICTIONS,
        "Producers forgotten because of --producer-ttl-ms or --max-producers (a very late retry of one is appended again)."
    );
    // At 0 from the start, for alerts on its rate.
    metrics::counter!(EVICTIONS).increment(0);
}

/// A producer as serialized.
#[derive(Serialize, Deserialize)]
struct Kept {
    id: String,
    epoch: u32,
    next_seq: u64,
    last_ms: u64,
    recent: Vec<(u64, u32, u64)>,
}

impl From<Producers> for Vec<Kept> {
    fn from(table: Producers) -> Vec<Kept> {
        table
            .by_use
            .values()
            .filter_map(|Used { id, .. }| {
                let p = table.by_id.get(id)?;
                Some(Kept {
                    id: id.to_string(),
                    epoch: p.epoch,
                    next_seq: p.next_seq,
                    last_ms: p.last_ms,
                    recent: p.recent.iter().map(|s| (s.seq, s.count, s.first)).collect(),
                })
            })
            .collect()
    }
}

impl From<Vec<Kept>> for Producers {
    fn from(kept: Vec<Kept>) -> Producers {
        let mut table = Producers::default();
        for k in kept {
            table.tick += 1;
            let id: Arc<str> = Arc::from(k.id);
            let recent = k
                .recent
                .into_iter()
                .rev()
                .take(KEPT_REQUESTS)
                .rev()
                .map(|(seq, count, first)| Sent { seq, count, first })
                .collect();
            let producer = Producer {
                epoch: k.epoch,
                next_seq: k.next_seq,
                last_ms: k.last_ms,
                tick: table.tick,
                recent,
            };
            if let Some(old) = table.by_id.insert(id.clone(), producer) {
                table.by_use.remove(&old.tick);
            }
            table.by_use.insert(table.tick, Used { id, last_ms: k.last_ms });
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(id: &str, epoch: u32, seq: u64, count: u32) -> ProducerStamp {
        ProducerStamp {
            id: id.into(),
            epoch,
            seq,
            count,
        }
    }

    const LIMITS: ProducerLimits = ProducerLimits {
        ttl_ms: 1000,
        max_producers: 3,
    };

    #[test]
    fn sequences_go_on_retries_get_their_offsets_and_others_are_refused() {
        let mut t = Producers::default();
        let first = stamp("p", 0, 10, 2);
        assert_eq!(t.check(&first, 0, &LIMITS), None, "an unknown producer starts anywhere");
        t.record(&first, 100, 0, &LIMITS);
        assert_eq!(
            t.check(&first, 1, &LIMITS),
            Some(Refusal::Duplicate { first: 100, last: 101 })
        );
        assert_eq!(t.check(&stamp("p", 0, 12, 1), 1, &LIMITS), None);
        assert_eq!(
            t.check(&stamp("p", 0, 13, 1), 1, &LIMITS),
            Some(Refusal::SequenceGap { expected: 12 })
        );
        assert_eq!(
            t.check(&stamp("p", 0, 11, 1), 1, &LIMITS),
            Some(Refusal::SequenceStale { expected: 12 })
        );
        for seq in 12..20 {
            t.record(&stamp("p", 0, seq, 1), 100 + seq, 1, &LIMITS);
        }
        assert_eq!(
            t.check(&stamp("p", 0, 14, 1), 1, &LIMITS),
            Some(Refusal::SequenceStale { expected: 20 }),
            "only the last 5 are kept"
        );
        assert_eq!(
            t.check(&stamp("p", 0, 15, 1), 1, &LIMITS),
            Some(Refusal::Duplicate { first: 115, last: 115 })
        );
    }

    #[test]
    fn epochs_fence_zombies_and_start_over() {
        let mut t = Producers::default();
        t.record(&stamp("p", 2, 0, 1), 0, 0, &LIMITS);
        assert_eq!(
            t.check(&stamp("p", 1, 1, 1), 0, &LIMITS),
            Some(Refusal::Fenced { epoch: 2 })
        );
        assert_eq!(
            t.check(&stamp("p", 3, 5, 1), 0, &LIMITS),
            Some(Refusal::SequenceGap { expected: 0 })
        );
        assert_eq!(t.check(&stamp("p", 3, 0, 1), 0, &LIMITS), None);
        t.record(&stamp("p", 3, 0, 1), 1, 0, &LIMITS);
        assert_eq!(
            t.check(&stamp("p", 3, 0, 1), 0, &LIMITS),
            Some(Refusal::Duplicate { first: 1, last: 1 })
        );
    }

    #[test]
    fn the_least_recently_used_and_the_expired_are_forgotten() {
        let mut t = Producers::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(t.record(&stamp(id, 0, 0, 1), i as u64, 10, &LIMITS), 0);
        }
        t.record(&stamp("a", 0, 1, 1), 3, 10, &LIMITS);
        assert_eq!(t.record(&stamp("d", 0, 0, 1), 4, 10, &LIMITS), 1);
        assert_eq!(t.check(&stamp("b", 0, 5, 1), 10, &LIMITS), None, "b was forgotten");
        assert!(t.check(&stamp("a", 0, 5, 1), 10, &LIMITS).is_some());
        assert_eq!(t.check(&stamp("a", 0, 5, 1), 2000, &LIMITS), None, "past its time");
        assert_eq!(t.evict(2000, &LIMITS), 3);
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_survives_json_in_its_order() {
        let mut t = Producers::default();
        for (i, id) in ["x", "y", "z"].iter().enumerate() {
            for seq in 0..7 {
                t.record(&stamp(id, 1, seq, 1), i as u64 * 10 + seq, 5, &LIMITS);
            }
        }
        t.record(&stamp("x", 1, 7, 1), 99, 6, &LIMITS);
        let back: Producers = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        for p in [
            stamp("x", 1, 7, 1),
            stamp("y", 1, 6, 1),
            stamp("z", 1, 1, 1),
            stamp("y", 1, 7, 1),
        ] {
            assert_eq!(back.check(&p, 6, &LIMITS), t.check(&p, 6, &LIMITS), "{p:?}");
        }
        let mut back = back;
        back.record(&stamp("w", 0, 0, 1), 0, 6, &LIMITS);
        assert_eq!(
            back.check(&stamp("y", 1, 0, 1), 6, &LIMITS),
            None,
            "y was the least recently used"
        );
    }

    #[test]
    fn a_hundred_thousand_producers_fit_in_64_mib() {
        let limits = ProducerLimits::default();
        let mut t = Producers::default();
        for i in 0..100_000u64 {
            let id = format!("producer-{i:0>54}");
            assert_eq!(id.len(), 63);
            for seq in 0..KEPT_REQUESTS as u64 {
                t.record(&stamp(&id, 0, seq, 1), i, 1, &limits);
            }
        }
        assert_eq!(t.len(), 100_000);
        let bytes = t.approximate_bytes();
        eprintln!("100,000 producers with 63-byte ids: ~{} MiB", bytes >> 20);
        assert!(bytes < 64 << 20, "{bytes} bytes");
        // A cluster's tables are read back up to 64 MiB: twice this (the
        // most `--max-producers` allows) must fit.
        let json = serde_json::to_vec(&t).unwrap().len();
        eprintln!("as JSON: {} MiB", json >> 20);
        assert!(2 * json < 64 << 20, "{json} bytes of JSON");
    }
}
