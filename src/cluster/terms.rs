//! The term of every entry, kept beside the log as Kafka keeps its
//! leader-epoch checkpoint: a list of runs `(term, first index)`, ascending
//! in both. An entry's term is that of the last run starting at or below
//! its index. Terms change only on elections, so the file is tiny and is
//! rewritten (atomically, see `durable`) only when a new term's first entry
//! is about to be written.
//!
//! Invariant kept by `LogStore`: the runs are durable before the entries
//! they describe are written, so every frame on disk has its term. Runs
//! past the log's end (a crash between the two writes, or a truncation) are
//! harmless: nothing reads them, and the next append drops them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    runs: Vec<(u64, u64)>,
}

impl Terms {
    /// Runs as they came from a file or a peer, checked to ascend.
    pub fn from_runs(runs: Vec<(u64, u64)>) -> Result<Terms, String> {
        for pair in runs.windows(2) {
            if let [(t1, i1), (t2, i2)] = pair
                && (t2 <= t1 || i2 <= i1)
            {
                return Err(format!("term runs do not ascend: ({t1}, {i1}) then ({t2}, {i2})"));
            }
        }
        Ok(Terms { runs })
    }

    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// The term of the entry at `index`, if a run covers it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        let i = self.runs.partition_point(|(_, first)| *first <= index);
        i.checked_sub(1).and_then(|i| self.runs.get(i)).map(|(term, _)| *term)
    }

    /// Makes room for entries from `index` on: runs starting at or after it
    /// describe entries that are gone or about to be overwritten.
    /// Returns whether anything changed.
    pub fn forget_from(&mut self, index: u64) -> bool {
        let keep = self.runs.partition_point(|(_, first)| *first < index);
        let changed = keep < self.runs.len();
        self.runs.truncate(keep);
        changed
    }

    /// The last index of each term's run within `[first, last]`, with its
    /// term, ascending: openraft's "key log ids" (`LogStore::get_key_log_ids`).
    pub fn last_of_each_term(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (k, (term, start)) in self.runs.iter().enumerate() {
            let ends_at = self
                .runs
                .get(k + 1)
                .map_or(u64::MAX, |(_, next)| next.saturating_sub(1));
            let end = ends_at.min(last);
            if *start <= last && end >= first {
                out.push((*term, end));
            }
        }
        out
    }

    /// Notes that the entry at `index` (the next after every run) has
    /// `term`. Returns whether a run was added.
    pub fn note(&mut self, term: u64, index: u64) -> bool {
        match self.runs.last() {
            Some((last, first)) if *last == term => {
                debug_assert!(*first <= index);
                false
            }
            last => {
                debug_assert!(last.is_none_or(|(t, i)| *t < term && *i < index), "terms ascend");
                self.runs.push((term, index));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a walk over every index: the last index of each term met.
    #[test]
    fn the_last_of_each_term_is_each_runs_end_within_the_range() {
        let terms = Terms::from_runs(vec![(2, 2), (5, 4), (6, 5), (9, 9)]).unwrap();
        for first in 2..14 {
            for last in first..14 {
                let mut walked: Vec<(u64, u64)> = Vec::new();
                for index in first..=last {
                    let term = terms.term_at(index).unwrap();
                    match walked.last_mut() {
                        Some((t, i)) if *t == term => *i = index,
                        _ => walked.push((term, index)),
                    }
                }
                assert_eq!(terms.last_of_each_term(first, last), walked, "[{first}, {last}]");
            }
        }
        assert_eq!(terms.last_of_each_term(5, 5), vec![(6, 5)]);
    }

    #[test]
    fn an_index_takes_the_term_of_the_run_it_falls_in() {
        let mut terms = Terms::default();
        assert!(terms.note(1, 0));
        assert!(!terms.note(1, 1));
        assert!(terms.note(3, 5));
        assert_eq!(terms.term_at(0), Some(1));
        assert_eq!(terms.term_at(4), Some(1));
        assert_eq!(terms.term_at(5), Some(3));
        assert_eq!(terms.term_at(500), Some(3));
        assert!(terms.forget_from(5));
        assert_eq!(terms.term_at(5), Some(1));
        assert!(!terms.forget_from(5));
        assert!(terms.note(4, 5));
        assert_eq!(terms.runs(), &[(1, 0), (4, 5)]);
    }

    #[test]
    fn nothing_below_the_first_run_has_a_term() {
        let terms = Terms::from_runs(vec![(2, 10)]).expect("ascending");
        assert_eq!(terms.term_at(9), None);
        assert_eq!(terms.term_at(10), Some(2));
    }

    #[test]
    fn runs_that_do_not_ascend_are_refused() {
        assert!(Terms::from_runs(vec![(2, 10), (2, 11)]).is_err());
        assert!(Terms::from_runs(vec![(2, 10), (3, 10)]).is_err());
        assert!(Terms::from_runs(vec![(3, 10), (2, 11)]).is_err());
    }
}
