//! Checks a write history against what the nodes serve.
//!
//! Pure checks on data (`check_history`, `check_logs_agree`,
//! `compare_frames`, `parse_frames`) are separate from the reads that
//! gather it (`read_visible`, `read_frames`, `wait_converged`), so the
//! selftests can feed them synthetic histories. `check_cluster` does it
//! all; `VisibleMonitor` watches the logs while a test runs. Every problem
//! is one line naming the offsets, values and nodes involved.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::rt;
use super::writer::{Attempt, History, Outcome};

/// Records fetched per page.
const PAGE: u64 = 1000;

/// A node's visible (committed, user) records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeLog {
    pub url: String,
    /// offset -> value (`"value"`, or `{"value_base64": ..}` for binary).
    pub records: BTreeMap<u64, Value>,
    /// The node's lowest offset when it was read: what lies below it was
    /// deleted by retention there, not lost.
    pub lowest: u64,
}

impl NodeLog {
    pub fn new(url: &str, records: impl IntoIterator<Item = (u64, Value)>) -> NodeLog {
        NodeLog {
            url: url.to_string(),
            records: records.into_iter().collect(),
            lowest: 0,
        }
    }

    /// One past the highest offset (0 when empty).
    pub fn end(&self) -> u64 {
        self.records.keys().next_back().map_or(0, |o| o + 1)
    }
}

/// One stored frame as `/replication/frames` serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Runs every pure check; an empty list means the history is consistent
/// with the logs. `logs` must be read after the cluster converged.
pub fn check_history(history: &History, logs: &[NodeLog]) -> Vec<String> {
    let mut problems = check_acks_present(history, logs);
    problems.extend(check_logs_agree(logs));
    problems.extend(check_no_duplicates_or_inventions(history, logs));
    problems.extend(check_ack_order(history));
    problems.extend(check_producers(history, logs));
    problems
}

/// Producer mode's verdict: every record a producer had answered is in
/// every log exactly once, and a producer's records are in its sequence
/// order. (Duplicates anywhere are `check_no_duplicates_or_inventions`'.)
pub fn check_producers(history: &History, logs: &[NodeLog]) -> Vec<String> {
    let producers = &history.producers.writers;
    if producers.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for log in logs {
        let mut last_seq: HashMap<u64, (u64, u64)> = HashMap::new();
        let mut count: HashMap<(u64, u64), u32> = HashMap::new();
        for (offset, value) in &log.records {
            let Some((writer, seq)) = super::writer::value_key(value) else {
                continue;
            };
            if !producers.contains(&writer) {
                continue;
            }
            *count.entry((writer, seq)).or_default() += 1;
            if let Some((before, at)) = last_seq.insert(writer, (seq, *offset))
                && before >= seq
            {
                problems.push(format!(
                    "producer w{writer} out of sequence on {}: seq {seq} at offset {offset} after seq {before} at offset {at}",
                    log.url
                ));
            }
        }
        for attempt in history.acked().filter(|a| producers.contains(&a.writer)) {
            match count.get(&(attempt.writer, attempt.seq)).copied().unwrap_or(0) {
                1 => {}
                n => problems.push(format!(
                    "producer w{} seq {} answered {:?} is in the log of {} {n} times, not once",
                    attempt.writer, attempt.seq, attempt.outcome, log.url
                )),
            }
        }
    }
    problems
}

/// How many producer records are in `log` more than once, over all copies.
pub fn producer_duplicates(history: &History, log: &NodeLog) -> usize {
    let mut seen = std::collections::HashSet::new();
    log.records
        .values()
        .filter_map(super::writer::value_key)
        .filter(|(writer, _)| history.producers.writers.contains(writer))
        .filter(|key| !seen.insert(*key))
        .count()
}

/// (a) Every acknowledged write is at its offset, with its value, on every
/// node; no two acknowledgements name the same offset.
pub fn check_acks_present(history: &History, logs: &[NodeLog]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_offset: BTreeMap<u64, &Attempt> = BTreeMap::new();
    for attempt in history.acked() {
        let Some(offset) = attempt.acked_offset() else { continue };
        if let Some(other) = by_offset.insert(offset, attempt) {
            problems.push(format!(
                "offset {offset} was acknowledged twice: for {} and for {}",
                other.body, attempt.body
            ));
        }
        let expected = attempt.value();
        for log in logs {
            match log.records.get(&offset) {
                Some(found) if *found == expected => {}
                Some(found) => problems.push(format!(
                    "acknowledged write {} (offset {offset}, acked by {}) is lost on {}: offset {offset} holds {found}",
                    attempt.body, attempt.last_node, log.url
                )),
                None => problems.push(format!(
                    "acknowledged write {} (offset {offset}, acked by {}) is missing on {} (its visible log ends at {})",
                    attempt.body,
                    attempt.last_node,
                    log.url,
                    log.end()
                )),
            }
        }
    }
    problems
}

/// Every offset one node has below another node's end, and at or above
/// both nodes' lowest offsets, holds the same value on both (nodes may only
/// differ in how far they go, and in how much retention deleted so far: it
/// runs on each node's own clock).
pub fn check_logs_agree(logs: &[NodeLog]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, a) in logs.iter().enumerate() {
        for b in &logs[i + 1..] {
            let common_end = a.end().min(b.end());
            let common = a.lowest.max(b.lowest)..common_end.max(a.lowest.max(b.lowest));
            for (offset, value) in a.records.range(common.clone()) {
                match b.records.get(offset) {
                    Some(other) if other == value => {}
                    Some(other) => problems.push(format!(
                        "offset {offset} differs: {} has {value}, {} has {other}",
                        a.url, b.url
                    )),
                    None => problems.push(format!(
                        "offset {offset} ({value}) is on {} but not on {}, whose log goes on to {}",
                        a.url,
                        b.url,
                        b.end()
                    )),
                }
            }
            for (offset, value) in b.records.range(common) {
                if !a.records.contains_key(offset) {
                    problems.push(format!(
                        "offset {offset} ({value}) is on {} but not on {}, whose log goes on to {}",
                        b.url,
                        a.url,
                        a.end()
                    ));
                }
            }
        }
    }
    problems
}

/// (c) No value is in a log twice; every value in a log was attempted and
/// not definitely refused (Unknown outcomes may be there, at most once).
pub fn check_no_duplicates_or_inventions(history: &History, logs: &[NodeLog]) -> Vec<String> {
    let attempts: HashMap<String, &Attempt> = history.attempts.iter().map(|a| (canonical(&a.value()), a)).collect();
    let mut problems = Vec::new();
    for log in logs {
        let mut seen: HashMap<String, u64> = HashMap::new();
        for (offset, value) in &log.records {
            let key = canonical(value);
            if let Some(first) = seen.insert(key.clone(), *offset) {
                problems.push(format!(
                    "duplicate on {}: {value} is at offset {first} and again at offset {offset}",
                    log.url
                ));
            }
            match attempts.get(&key) {
                None => problems.push(format!(
                    "invented on {}: offset {offset} holds {value}, which no writer attempted",
                    log.url
                )),
                Some(attempt) => {
                    if let Outcome::Failed(status) = attempt.outcome {
                        problems.push(format!(
                            "refused write appended on {}: {value} at offset {offset} was answered {status}",
                            log.url
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// (d) If acknowledgement A came before write B was sent, A's offset is
/// below B's.
pub fn check_ack_order(history: &History) -> Vec<String> {
    let mut acked: Vec<(&Attempt, u64)> = history
        .acked()
        .filter_map(|a| a.acked_offset().map(|offset| (a, offset)))
        .collect();
    let mut by_done = acked.clone();
    by_done.sort_by_key(|(a, _)| a.done);
    acked.sort_by_key(|(a, _)| a.sent);
    let mut problems = Vec::new();
    // The highest offset among acknowledgements completed so far.
    let mut highest: Option<(&Attempt, u64)> = None;
    let mut done = by_done.iter().peekable();
    for (attempt, offset) in acked {
        while let Some((earlier, earlier_offset)) = done.next_if(|(a, _)| a.done < attempt.sent) {
            if highest.is_none_or(|(_, h)| *earlier_offset > h) {
                highest = Some((earlier, *earlier_offset));
            }
        }
        if let Some((earlier, earlier_offset)) = highest
            && earlier_offset >= offset
        {
            problems.push(format!(
                "acknowledgements out of real-time order: {} was acked at offset {earlier_offset} {:?} before {} was sent, which got the lower offset {offset}",
                earlier.body,
                attempt.sent.saturating_duration_since(earlier.done),
                attempt.body
            ));
        }
    }
    problems
}

/// A stable text form of a JSON value, to use as a key.
pub fn canonical(value: &Value) -> String {
    value.to_string()
}

/// Splits a `/replication/frames` body into frames (layout in
/// `src/log/record.rs`: `len u32 | crc u32 | version | flags | attributes |
/// offset u64 | timestamp u64 | value`, little-endian; `len` counts what
/// follows `crc`).
pub fn parse_frames(mut body: &[u8]) -> Result<Vec<Frame>, String> {
    const PREFIX: usize = 8;
    const AFTER_CRC: usize = 3 + 8 + 8;
    let mut frames = Vec::new();
    while !body.is_empty() {
        let len = body
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("a frame cut short in its length ({} bytes left)", body.len()))?;
        if len < AFTER_CRC || body.len() < PREFIX + len {
            return Err(format!(
                "a frame of length {len} does not fit the {} bytes left (after {} frames)",
                body.len(),
                frames.len()
            ));
        }
        let (frame, rest) = body.split_at(PREFIX + len);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&frame[PREFIX + 3..PREFIX + 11]);
        frames.push(Frame {
            offset: u64::from_le_bytes(offset),
            bytes: frame.to_vec(),
        });
        body = rest;
    }
    Ok(frames)
}

/// (b) The nodes' frames are byte-identical where their logs overlap (from
/// the highest first offset to the lowest last one).
pub fn compare_frames(logs: &[(String, Vec<Frame>)]) -> Vec<String> {
    let non_empty: Vec<&(String, Vec<Frame>)> = logs.iter().filter(|(_, f)| !f.is_empty()).collect();
    let (Some(start), Some(end)) = (
        non_empty.iter().filter_map(|(_, f)| f.first()).map(|f| f.offset).max(),
        non_empty.iter().filter_map(|(_, f)| f.last()).map(|f| f.offset).min(),
    ) else {
        return Vec::new();
    };
    let in_range = |frames: &[Frame]| -> BTreeMap<u64, Vec<u8>> {
        frames
            .iter()
            .filter(|f| f.offset >= start && f.offset <= end)
            .map(|f| (f.offset, f.bytes.clone()))
            .collect()
    };
    let mut problems = Vec::new();
    let Some((first_url, first_frames)) = non_empty.first() else {
        return problems;
    };
    let reference = in_range(first_frames);
    for (url, frames) in &non_empty[1..] {
        let other = in_range(frames);
        let offsets: std::collections::BTreeSet<u64> = reference.keys().chain(other.keys()).copied().collect();
        for offset in offsets {
            match (reference.get(&offset), other.get(&offset)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => {
                    problems.push(format!(
                        "frame at offset {offset} differs between {first_url} ({} bytes, {}) and {url} ({} bytes, {})",
                        a.len(),
                        describe_frame(a),
                        b.len(),
                        describe_frame(b)
                    ));
                    break; // the first difference says it; the rest follow from it
                }
                (Some(_), None) => {
                    problems.push(format!("frame at offset {offset} is on {first_url} but not on {url}"));
                    break;
                }
                (None, _) => {
                    problems.push(format!("frame at offset {offset} is on {url} but not on {first_url}"));
                    break;
                }
            }
        }
    }
    problems
}

fn describe_frame(bytes: &[u8]) -> String {
    if bytes.len() < 27 {
        return "too short".into();
    }
    let mut timestamp = [0u8; 8];
    timestamp.copy_from_slice(&bytes[19..27]);
    format!(
        "flags {:#04x}, attributes {:#04x}, timestamp {}, value {:?}",
        bytes[9],
        bytes[10],
        u64::from_le_bytes(timestamp),
        String::from_utf8_lossy(&bytes[27..bytes.len().min(27 + 80)])
    )
}

/// Reads a node's whole visible log through `GET /?from=&limit=` pages.
pub async fn read_visible(url: &str) -> Result<NodeLog, String> {
    rt::on_harness(read_visible_on_harness(url.to_string(), Duration::from_secs(5))).await
}

async fn read_visible_on_harness(url: String, timeout: Duration) -> Result<NodeLog, String> {
    let mut log = NodeLog::new(&url, []);
    let mut from = 0;
    loop {
        let request = rt::http()
            .get(format!("{url}/?from={from}&limit={PAGE}"))
            .timeout(timeout)
            .send();
        let response = request.await.map_err(|e| format!("{url}: reading from {from}: {e}"))?;
        let status = response.status().as_u16();
        let page: Value = response
            .json()
            .await
            .map_err(|e| format!("{url}: reading from {from}: {status} with a body that is not JSON: {e}"))?;
        if status == 404 && page["code"] == "offset_not_found" {
            // Below the lowest offset (compacted): start there.
            match page["lowest_offset"].as_u64() {
                Some(lowest) if lowest > from => {
                    from = lowest;
                    log.lowest = lowest;
                    continue;
                }
                _ => return Err(format!("{url}: reading from {from}: {page}")),
            }
        }
        if status != 200 {
            return Err(format!("{url}: reading from {from}: {status} {page}"));
        }
        let records = page["records"]
            .as_array()
            .ok_or_else(|| format!("{url}: a page without records: {page}"))?;
        if records.is_empty() {
            return Ok(log);
        }
        for record in records {
            let offset = record["offset"]
                .as_u64()
                .ok_or_else(|| format!("{url}: a record without an offset: {record}"))?;
            let value = match (record.get("value"), record.get("value_base64")) {
                (Some(value), _) => value.clone(),
                (None, Some(b64)) => serde_json::json!({ "value_base64": b64 }),
                (None, None) => return Err(format!("{url}: a record without a value: {record}")),
            };
            if offset < from {
                return Err(format!("{url}: asked from {from}, got offset {offset}"));
            }
            log.records.insert(offset, value);
        }
        let next = page["next_offset"]
            .as_u64()
            .ok_or_else(|| format!("{url}: a page without next_offset: {page}"))?;
        if next <= from {
            return Err(format!("{url}: next_offset {next} does not move on from {from}"));
        }
        from = next;
    }
}

/// Reads a node's committed frames through `/replication/frames` pages.
pub async fn read_frames(url: &str) -> Result<Vec<Frame>, String> {
    rt::on_harness(read_frames_on_harness(url.to_string())).await
}

async fn read_frames_on_harness(url: String) -> Result<Vec<Frame>, String> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut from = 0;
    loop {
        let response = rt::http()
            .get(format!("{url}/replication/frames?from={from}&max_records={PAGE}"))
            .send()
            .await
            .map_err(|e| format!("{url}: frames from {from}: {e}"))?;
        let status = response.status().as_u16();
        if status == 404 {
            let body: Value = response.json().await.unwrap_or_default();
            match body["lowest_offset"].as_u64() {
                Some(lowest) if lowest > from => {
                    from = lowest;
                    continue;
                }
                _ => return Err(format!("{url}: frames from {from}: 404 {body}")),
            }
        }
        if status != 200 {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{url}: frames from {from}: {status} {text}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{url}: frames from {from}: {e}"))?;
        let page = parse_frames(&body).map_err(|e| format!("{url}: frames from {from}: {e}"))?;
        let Some(last) = page.last() else {
            return Ok(frames);
        };
        // Offsets may skip (control entries), so move on from the last frame.
        let next = last.offset + 1;
        if page.first().is_some_and(|f| f.offset < from) || next <= from {
            return Err(format!("{url}: frames from {from} began at {}", page[0].offset));
        }
        frames.extend(page);
        from = next;
    }
}

/// Reads every node's visible log until all end at the same offset (and,
/// when `/cluster` answers on every node, all report the same
/// `commit_offset`), polling until `timeout`. Returns the last reads either
/// way, with whether they converged.
pub async fn wait_converged(urls: &[String], timeout: Duration) -> (bool, Vec<Result<NodeLog, String>>) {
    let urls = urls.to_vec();
    rt::on_harness(async move {
        let deadline = Instant::now() + timeout;
        loop {
            let mut logs = Vec::new();
            for url in &urls {
                logs.push(read_visible_on_harness(url.clone(), Duration::from_secs(5)).await);
            }
            let ends: Vec<Option<u64>> = logs.iter().map(|l| l.as_ref().ok().map(NodeLog::end)).collect();
            let ends_agree = ends.iter().all(|e| e.is_some() && *e == ends[0]);
            let mut commits = Vec::new();
            for url in &urls {
                commits.push(commit_offset(url).await);
            }
            let commits_agree = commits.iter().any(Option::is_none) || commits.iter().all(|c| *c == commits[0]);
            if ends_agree && commits_agree {
                return (true, logs);
            }
            if Instant::now() >= deadline {
                return (false, logs);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

async fn commit_offset(url: &str) -> Option<u64> {
    let response = rt::http()
        .get(format!("{url}/cluster"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status: Value = response.json().await.ok()?;
    status["commit_offset"].as_u64()
}

/// Waits for the nodes at `urls` to converge, then runs every check:
/// history against the visible logs, and the frames compared byte for byte.
pub async fn check_cluster(urls: &[String], history: &History, timeout: Duration) -> Vec<String> {
    let (converged, reads) = wait_converged(urls, timeout).await;
    let mut problems = Vec::new();
    let mut logs = Vec::new();
    for read in reads {
        match read {
            Ok(log) => logs.push(log),
            Err(error) => problems.push(format!("could not read a node's log: {error}")),
        }
    }
    if !converged {
        let ends: Vec<String> = logs.iter().map(|l| format!("{} ends at {}", l.url, l.end())).collect();
        problems.push(format!(
            "the nodes did not converge within {timeout:?}: {}",
            ends.join(", ")
        ));
    }
    problems.extend(check_history(history, &logs));
    let mut frames = Vec::new();
    for url in urls {
        match read_frames(url).await {
            Ok(f) => frames.push((url.clone(), f)),
            Err(error) => problems.push(format!("could not read a node's frames: {error}")),
        }
    }
    problems.extend(compare_frames(&frames));
    problems
}

/// Panics listing `problems` (the first 40) when there are any.
pub fn assert_clean(what: &str, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let shown: Vec<&str> = problems.iter().take(40).map(String::as_str).collect();
    panic!(
        "{what}: {} problem(s){}:\n  {}",
        problems.len(),
        if problems.len() > shown.len() {
            ", the first 40"
        } else {
            ""
        },
        shown.join("\n  ")
    );
}

/// (e) Watches the nodes' visible logs while a test runs: an offset that
/// ever showed a value must show that value on every node ever after, and
/// a node's visible end must never go back. A node that does not answer
/// (killed, stopped) is skipped; a wiped node must be announced
/// (`node_wiped`), since its log legitimately starts over.
pub struct VisibleMonitor {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<MonitorState>>,
}

/// What the monitor has seen; `observe` is its pure check.
#[derive(Default)]
pub struct MonitorState {
    /// offset -> (value, the node it was first seen on)
    seen: BTreeMap<u64, (Value, String)>,
    /// url -> the highest end a complete read of it showed
    ends: HashMap<String, u64>,
    /// url -> bumped by `node_wiped`; reads begun before are ignored
    generation: HashMap<String, u64>,
    complete_reads: u64,
    pub problems: Vec<String>,
}

impl MonitorState {
    /// `url` was wiped: reads of it begun before are ignored, and its end
    /// starts over.
    pub fn node_wiped(&mut self, url: &str) {
        *self.generation.entry(url.to_string()).or_insert(0) += 1;
        self.ends.remove(url);
    }

    pub fn generation(&self, url: &str) -> u64 {
        self.generation.get(url).copied().unwrap_or(0)
    }

    /// Checks one read of `url` (made in `generation`) against what was seen.
    pub fn observe(&mut self, url: &str, generation: u64, log: &NodeLog) {
        if self.generation(url) != generation {
            return;
        }
        for (offset, value) in &log.records {
            match self.seen.get(offset) {
                Some((first, on)) if first != value => {
                    let problem = format!("offset {offset} changed: {on} showed {first}, then {url} showed {value}");
                    self.problems.push(problem);
                }
                Some(_) => {}
                None => {
                    self.seen.insert(*offset, (value.clone(), url.to_string()));
                }
            }
        }
        let end = log.end();
        let before = self.ends.entry(url.to_string()).or_insert(0);
        if end < *before {
            self.problems.push(format!(
                "the visible log of {url} went back from end {} to end {end}",
                *before
            ));
        }
        *before = (*before).max(end);
        self.complete_reads += 1;
    }
}

impl VisibleMonitor {
    /// Polls every node's visible log every `interval` until stopped.
    pub fn start(urls: Vec<String>, interval: Duration) -> VisibleMonitor {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let (stop, mut stopped) = watch::channel(false);
        let shared = state.clone();
        let task = rt::runtime().spawn(async move {
            loop {
                for url in &urls {
                    let generation = lock(&shared).generation(url);
                    // A node that does not answer (down, stopped) is skipped.
                    if let Ok(log) = read_visible_on_harness(url.clone(), Duration::from_secs(1)).await {
                        lock(&shared).observe(url, generation, &log);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        });
        VisibleMonitor { stop, task, state }
    }

    /// The node at `url` was wiped: its log may start over from nothing.
    pub fn node_wiped(&self, url: &str) {
        lock(&self.state).node_wiped(url);
    }

    /// Complete reads so far (to check the monitor actually watched).
    pub fn complete_reads(&self) -> u64 {
        lock(&self.state).complete_reads
    }

    /// Problems found so far.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.state).problems.clone()
    }

    /// Stops polling and returns every problem found.
    pub async fn stop(self) -> Vec<String> {
        self.stop.send_replace(true);
        let _ = self.task.await;
        lock(&self.state).problems.clone()
    }
}

fn lock(state: &Mutex<MonitorState>) -> std::sync::MutexGuard<'_, MonitorState> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
