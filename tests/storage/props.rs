//! Random sequences of appends, batches, reopens, crashes, cuts and reads,
//! checked against an in-memory model of the log.

use std::fs;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use distlog::log::fsops::{self, Step};
use distlog::log::{Durability, Log, LogConfig, LogError, Payload, split_frames};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tempfile::TempDir;

use crate::fixtures::{FRAME_HEADER, index_bytes};

const HEADER: u64 = FRAME_HEADER as u64;
const MAX_VALUE: usize = 300;

fn config() -> LogConfig {
    LogConfig {
        // A few records a segment; a batch of large records may not fit at all.
        max_segment_bytes: 1024,
        // 8 entries: small records roll on the index, large ones on bytes.
        max_index_bytes: index_bytes(8),
        max_record_bytes: MAX_VALUE as u64,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u8>),
    AppendBatch(Vec<Vec<u8>>),
    /// Drop the log and open it again.
    Reopen,
    /// Copy the files of the open log elsewhere (an unclean stop) and open the copy.
    Crash,
    /// `purge_before` at an offset picked from around the log's range by the selector.
    Purge(u16),
    /// `cut_after` at an offset near the end (mostly) or picked from
    /// around the log's range.
    CutAfter(u16),
    Read(u16),
    ReadRange(u16, u32, u64),
    /// `reset` a little past the next offset.
    Reset(u8),
    /// A change (append, batch, purge, cut or reset) whose n-th
    /// file-system step fails with an injected I/O error.
    Faulty(u8, Box<Op>),
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(any::<u8>(), 0..MAX_VALUE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => value().prop_map(Op::Append),
        6 => prop::collection::vec(value(), 1..6).prop_map(Op::AppendBatch),
        2 => Just(Op::Reopen),
        2 => Just(Op::Crash),
        3 => any::<u16>().prop_map(Op::Purge),
        3 => any::<u16>().prop_map(Op::CutAfter),
        6 => any::<u16>().prop_map(Op::Read),
        5 => (any::<u16>(), 0u32..20, prop_oneof![0u64..400, 0u64..4000, Just(u64::MAX)])
            .prop_map(|(from, n, bytes)| Op::ReadRange(from, n, bytes)),
        1 => any::<u8>().prop_map(|d| Op::Reset(d % 4)),
        4 => (0u8..14, change()).prop_map(|(nth, op)| Op::Faulty(nth, Box::new(op))),
    ]
}

/// The operations that change the log, with the same weights as in `op`.
fn change() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(value(), 1..6).prop_map(Op::AppendBatch),
        4 => value().prop_map(Op::Append),
        3 => any::<u16>().prop_map(Op::Purge),
        3 => any::<u16>().prop_map(Op::CutAfter),
        1 => any::<u8>().prop_map(|d| Op::Reset(d % 4)),
    ]
}

/// The log as it should be: `values[i]` is the record at `lowest + i`.
#[derive(Debug, Default)]
struct Model {
    lowest: u64,
    values: Vec<Vec<u8>>,
}

impl Model {
    fn next(&self) -> u64 {
        self.lowest + self.values.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&[u8]> {
        let i = offset.checked_sub(self.lowest)?;
        self.values.get(usize::try_from(i).ok()?).map(Vec::as_slice)
    }

    /// An offset from three below `lowest` to three past `next`.
    fn pick(&self, selector: u16) -> u64 {
        let from = self.lowest.saturating_sub(3);
        let span = self.next() + 4 - from;
        from + u64::from(selector) % span
    }

    /// What `read_range(from, n, bytes)` returns: the first record whatever
    /// its size, then records while their frames stay within `bytes`.
    fn range(&self, from: u64, n: u32, bytes: u64) -> Vec<(u64, &[u8])> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut offset = from;
        while let Some(v) = self.get(offset) {
            if out.len() as u64 >= u64::from(n) {
                break;
            }
            total = total.saturating_add(HEADER + v.len() as u64);
            if !out.is_empty() && total > bytes {
                break;
            }
            out.push((offset, v));
            offset += 1;
        }
        out
    }
}

struct Harness {
    dir: TempDir,
    log: Option<Log>,
    model: Model,
}

fn out_of_range(
    result: Result<impl std::fmt::Debug, LogError>,
    offset: u64,
    model: &Model,
) -> Result<(), TestCaseError> {
    match result {
        Err(LogError::OutOfRange {
            offset: o,
            lowest,
            next,
        }) => {
            prop_assert_eq!((o, lowest, next), (offset, model.lowest, model.next()));
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "offset {offset} (lowest {}, next {}): expected OutOfRange, got {other:?}",
            model.lowest,
            model.next()
        ))),
    }
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        Harness {
            dir,
            log: Some(log),
            model: Model::default(),
        }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        drop(self.log.take());
        self.log = Some(Log::open(self.dir.path(), config()).unwrap());
    }

    /// Copies the segment files of the open log (index files at their mapped
    /// size, as `kill -9` leaves them) to a new directory and goes on there.
    fn crash(&mut self) {
        let log = self.log.take().unwrap();
        log.sync().unwrap();
        let image = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.ends_with(".store") || name.ends_with(".index") {
                fs::copy(&path, image.path().join(name)).unwrap();
            }
        }
        drop(log);
        self.dir = image;
        self.log = Some(Log::open(self.dir.path(), config()).unwrap());
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(v) => {
                let offset = self.log().append(v).unwrap();
                prop_assert_eq!(offset, self.model.next());
                self.model.values.push(v.clone());
            }
            Op::AppendBatch(vs) => {
                let payloads: Vec<Payload> = vs.iter().map(|v| Payload::new(v)).collect();
                let result = self.log().append_batch(&payloads);
                let bytes: u64 = vs.iter().map(|v| HEADER + v.len() as u64).sum();
                if bytes > config().max_segment_bytes {
                    prop_assert!(
                        matches!(result, Err(LogError::TooLarge { what: "batch", .. })),
                        "a batch of {} bytes must be refused whole: {:?}",
                        bytes,
                        result
                    );
                } else {
                    prop_assert_eq!(result.unwrap(), self.model.next());
                    self.model.values.extend(vs.iter().cloned());
                }
            }
            Op::Reopen => self.reopen(),
            Op::Crash => self.crash(),
            Op::Purge(sel) => {
                let lowest = self.model.pick(*sel);
                let before = self.model.lowest;
                let dropped = self.log().purge_before(lowest).unwrap();
                let now = self.log().lowest_offset();
                prop_assert!(
                    now >= before,
                    "purge_before({}) moved lowest back from {} to {}",
                    lowest,
                    before,
                    now
                );
                prop_assert!(
                    now <= lowest.max(before),
                    "purge_before({}) dropped records at or above it: lowest {} -> {}",
                    lowest,
                    before,
                    now
                );
                prop_assert!(
                    now <= self.model.next(),
                    "lowest {} past next {}",
                    now,
                    self.model.next()
                );
                prop_assert_eq!(dropped > 0, now > before, "segments dropped vs lowest moved");
                self.model.values.drain(..(now - before) as usize);
                self.model.lowest = now;
            }
            Op::CutAfter(sel) => {
                let offset = if sel % 4 == 0 {
                    self.model.pick(sel / 4)
                } else {
                    self.model.next().saturating_sub(1 + u64::from(sel / 4 % 8))
                };
                let keep = offset + 1;
                let result = self.log().cut_after(offset);
                if keep >= self.model.next() {
                    prop_assert!(result.is_ok(), "cut_after({}) past the end: {:?}", offset, result);
                } else if keep < self.model.lowest {
                    out_of_range(result, offset, &self.model)?;
                } else {
                    prop_assert!(result.is_ok(), "cut_after({}): {:?}", offset, result);
                    self.model.values.truncate((keep - self.model.lowest) as usize);
                }
            }
            Op::Read(sel) => {
                let offset = self.model.pick(*sel);
                let result = self.log().read(offset);
                match self.model.get(offset) {
                    Some(v) => {
                        let record = result.map_err(|e| TestCaseError::fail(format!("read {offset}: {e}")))?;
                        prop_assert_eq!(record.offset, offset);
                        prop_assert_eq!(&record.value[..], v, "value at {}", offset);
                    }
                    None => out_of_range(result, offset, &self.model)?,
                }
            }
            Op::ReadRange(sel, n, bytes) => {
                let from = self.model.pick(*sel);
                let result = self.log().read_range(from, *n, *bytes);
                if from < self.model.lowest || from > self.model.next() {
                    out_of_range(result, from, &self.model)?;
                    out_of_range(self.log().read_frames(from, *n, *bytes), from, &self.model)?;
                } else {
                    let records = result.map_err(|e| TestCaseError::fail(format!("read_range {from}: {e}")))?;
                    let expected = self.model.range(from, *n, *bytes);
                    let got: Vec<(u64, &[u8])> = records.iter().map(|r| (r.offset, &r.value[..])).collect();
                    prop_assert_eq!(&got, &expected, "read_range({}, {}, {})", from, n, bytes);
                    let (frames, count) = self.log().read_frames(from, *n, *bytes).unwrap();
                    prop_assert_eq!(count as usize, expected.len());
                    let split = split_frames(frames, from, 1 << 20).unwrap();
                    let got: Vec<(u64, &[u8])> = split.iter().map(|r| (r.offset, &r.value[..])).collect();
                    prop_assert_eq!(&got, &expected, "read_frames({}, {}, {})", from, n, bytes);
                }
            }
            Op::Reset(d) => {
                let base = self.model.next() + u64::from(*d);
                self.log().reset(base).unwrap();
                self.model = Model {
                    lowest: base,
                    values: Vec::new(),
                };
            }
            Op::Faulty(nth, change) => self.apply_with_fault(usize::from(*nth), change)?,
        }
        self.check_bounds()
    }

    /// Runs `change` with its `nth` file-system step failed, restarts the
    /// log if that failed it, and checks what is left against what the
    /// change may and may not have done; the model then follows the log.
    fn apply_with_fault(&mut self, nth: usize, change: &Op) -> Result<(), TestCaseError> {
        let seen = AtomicUsize::new(0);
        let watch = fsops::watch(
            self.dir.path(),
            Arc::new(move |step: &Step<'_>| {
                if seen.fetch_add(1, Ordering::SeqCst) == nth {
                    return Err(io::Error::other(format!("injected failure of {step:?}")));
                }
                Ok(())
            }),
        );
        let log = self.log().clone();
        let (lowest, next) = (self.model.lowest, self.model.next());
        let mut appended: Vec<Vec<u8>> = Vec::new();
        // What the change leaves in place whatever happens: [low, high).
        let (outcome, protected) = match change {
            Op::Append(v) => {
                appended.push(v.clone());
                (log.append(v).map(drop), (lowest, next))
            }
            Op::AppendBatch(vs) => {
                appended.clone_from(vs);
                let payloads: Vec<Payload> = vs.iter().map(|v| Payload::new(v)).collect();
                (log.append_batch(&payloads).map(drop), (lowest, next))
            }
            Op::Purge(sel) => {
                let upto = self.model.pick(*sel);
                (log.purge_before(upto).map(drop), (upto.max(lowest).min(next), next))
            }
            Op::CutAfter(sel) => {
                let keep = (self.model.pick(*sel) + 1).max(lowest);
                (log.cut_after(keep - 1).map(drop), (lowest, keep.min(next)))
            }
            Op::Reset(d) => (log.reset(next + u64::from(*d)).map(drop), (next, next)),
            _ => unreachable!("only changes are made faulty"),
        };
        drop(log);
        drop(watch);
        if self.log().failure().is_some() {
            prop_assert!(outcome.is_err(), "the log failed, yet the change succeeded");
            self.reopen();
        }
        let log = self.log();
        let (now_lowest, now_next) = (log.lowest_offset(), log.next_offset());
        if let Op::Reset(d) = change {
            // A reset leaves the new empty log, or (failed) part of the old one.
            let base = next + u64::from(*d);
            prop_assert!(
                (now_lowest, now_next) == (base, base) || (now_lowest >= lowest && now_next <= next),
                "{:?} with step {} failed ({:?}) left [{}, {})",
                change,
                nth,
                outcome,
                now_lowest,
                now_next
            );
        } else {
            prop_assert!(
                now_lowest <= protected.0 && now_next >= protected.1,
                "{:?} with step {} failed ({:?}) left [{}, {}), which loses part of [{}, {})",
                change,
                nth,
                outcome,
                now_lowest,
                now_next,
                protected.0,
                protected.1
            );
        }
        if outcome.is_ok() && !appended.is_empty() {
            prop_assert_eq!(now_next, next + appended.len() as u64, "an acknowledged append is gone");
        }
        if !appended.is_empty() {
            prop_assert!(
                now_next == next || now_next == next + appended.len() as u64,
                "a batch landed in part: [{}, {}) after next {}",
                now_lowest,
                now_next,
                next
            );
        }
        let mut values = Vec::new();
        for offset in now_lowest..now_next {
            let record = log
                .read(offset)
                .map_err(|e| TestCaseError::fail(format!("after {change:?}, step {nth} failed: read {offset}: {e}")))?;
            let expected = match (self.model.get(offset), offset.checked_sub(next)) {
                (Some(v), _) => v,
                (None, Some(i)) => &appended[usize::try_from(i).unwrap()][..],
                (None, None) => return Err(TestCaseError::fail(format!("offset {offset} was never appended"))),
            };
            prop_assert_eq!(&record.value[..], expected, "value at {} after {:?}", offset, change);
            values.push(record.value.to_vec());
        }
        self.model = Model {
            lowest: now_lowest,
            values,
        };
        Ok(())
    }

    fn check_bounds(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.log().lowest_offset(), self.model.lowest, "lowest offset");
        prop_assert_eq!(self.log().next_offset(), self.model.next(), "next offset");
        Ok(())
    }

    /// Every record reads back, one by one and as one range.
    fn check_all(&self) -> Result<(), TestCaseError> {
        self.check_bounds()?;
        for (i, v) in self.model.values.iter().enumerate() {
            let offset = self.model.lowest + i as u64;
            let record = self
                .log()
                .read(offset)
                .map_err(|e| TestCaseError::fail(format!("read {offset}: {e}")))?;
            prop_assert_eq!(&record.value[..], &v[..], "value at {}", offset);
        }
        let all = self
            .log()
            .read_range(self.model.lowest, u32::MAX, u64::MAX)
            .map_err(|e| TestCaseError::fail(format!("read_range: {e}")))?;
        prop_assert_eq!(all.len(), self.model.values.len());
        for (record, v) in all.iter().zip(&self.model.values) {
            prop_assert_eq!(&record.value[..], &v[..], "range value at {}", record.offset);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_behaves_like_its_model(ops in prop::collection::vec(op(), 1..150)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op)?;
        }
        harness.check_all()?;
        harness.reopen();
        harness.check_all()?;
        harness.crash();
        harness.check_all()?;
        // The log takes appends where the model says it should.
        let next = harness.log().append(b"last").unwrap();
        prop_assert_eq!(next, harness.model.next());
    }
}
