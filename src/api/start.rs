//! Where a range read (`read`) or an event stream (`sse`) starts, as the
//! query says: `from` (an offset), `from_timestamp` (the first record
//! stamped at or after a time, in ms since the Unix epoch, found by
//! `Log::offset_at_time`), or `tail` (the last N records readers see). At
//! most one of them; none is each route's own default.
//!
//! A time past the newest record starts where the log ends, so a long poll
//! or a stream waits for new records; those stamped before the time (a
//! time in the future) are skipped until one is not (`skip_before`).

use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::state::AppState;
use crate::log::Record;

/// The parameters that each choose a start, at most one per request.
const STARTS: [&str; 3] = ["from", "from_timestamp", "tail"];

/// Where the query asks a read to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Offset(u64),
    Time(u64),
    /// The last N records (N at least 1, not yet capped).
    Tail(u64),
}

impl Start {
    /// The start the query names, if any. Two of `from`, `from_timestamp`
    /// and `tail` together are refused naming both, before either is read.
    pub fn parse(query: &Query) -> ApiResult<Option<Start>> {
        let given: Vec<&'static str> = STARTS.into_iter().filter(|p| query.has(p)).collect();
        if given.len() > 1 {
            return Err(ApiError::ConflictingQuery { params: given });
        }
        if let Some(offset) = query.offset("from")? {
            return Ok(Some(Start::Offset(offset)));
        }
        // A time beyond u64 saturates: it is after every record.
        if let Some(time) = query.number("from_timestamp")? {
            return Ok(Some(Start::Time(time)));
        }
        match query.number("tail")? {
            Some(0) => Err(ApiError::BadQuery {
                param: "tail",
                detail: "must be at least 1".into(),
            }),
            Some(n) => Ok(Some(Start::Tail(n))),
            None => Ok(None),
        }
    }

    /// The time records before which are skipped, for a start by time.
    pub fn not_before(self) -> Option<u64> {
        match self {
            Start::Time(time) => Some(time),
            _ => None,
        }
    }
}

/// The first offset stamped at or after `time_ms` (or where the log ends).
pub async fn offset_at_time(state: &AppState, time_ms: u64) -> ApiResult<u64> {
    let log = state.log.clone();
    tokio::task::spawn_blocking(move || log.offset_at_time(time_ms))
        .await
        .map_err(|e| ApiError::Internal(format!("lookup task failed: {e}")))?
        .map_err(ApiError::from)
}

/// The last `n` records readers see (fewer if the log holds fewer, or if
/// `max_bytes` of them come first), oldest first, and the offset after
/// the last one read. Hidden offsets (a cluster's control entries and
/// aborted batches) are not counted: the read reaches back past them.
pub async fn last_records(state: &AppState, n: u32, max_bytes: u64) -> ApiResult<(Vec<Record>, u64)> {
    let next = state.log.next_offset();
    let mut reach = u64::from(n);
    // Hidden offsets come a few at a time: a few rounds find enough.
    let mut round = 0;
    loop {
        let start = next.saturating_sub(reach).max(state.log.lowest_offset());
        let log = state.log.clone();
        let count = u32::try_from(next - start).unwrap_or(u32::MAX);
        let mut records = tokio::task::spawn_blocking(move || log.read_range(start, count, max_bytes))
            .await
            .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))??;
        let read_to = records.last().map_or(start, |r| r.offset + 1);
        records.retain(|r| !state.hidden(r.offset, r.attributes));
        let shown = u64::try_from(records.len()).unwrap_or(u64::MAX);
        let done = shown >= u64::from(n) || start <= state.log.lowest_offset() || read_to < next || round == 4;
        if done {
            let extra = records.len().saturating_sub(n as usize);
            records.drain(..extra);
            return Ok((records, read_to));
        }
        reach += u64::from(n) - shown;
        round += 1;
    }
}

/// Drops the records at the front of `records` stamped before `time_ms`:
/// a read that waited at the log's end for a time still to come.
pub fn skip_before(records: &mut Vec<Record>, time_ms: Option<u64>) {
    if let Some(time) = time_ms {
        let early = records.iter().take_while(|r| r.timestamp_ms < time).count();
        records.drain(..early);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> ApiResult<Option<Start>> {
        Start::parse(&Query::parse(Some(raw)).unwrap())
    }

    #[test]
    fn one_start_at_most_and_conflicts_name_both_parameters() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("from=3&limit=2").unwrap(), Some(Start::Offset(3)));
        assert_eq!(parse("from_timestamp=99").unwrap(), Some(Start::Time(99)));
        assert_eq!(parse("tail=5").unwrap(), Some(Start::Tail(5)));
        for (raw, names) in [
            ("from=1&from_timestamp=2", vec!["from", "from_timestamp"]),
            ("tail=1&from=x", vec!["from", "tail"]),
            ("from_timestamp=1&tail=2", vec!["from_timestamp", "tail"]),
        ] {
            match parse(raw) {
                Err(ApiError::ConflictingQuery { params }) => assert_eq!(params, names, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
        assert!(matches!(
            parse("from_timestamp=soon"),
            Err(ApiError::BadQuery {
                param: "from_timestamp",
                ..
            })
        ));
        assert!(matches!(parse("tail=0"), Err(ApiError::BadQuery { param: "tail", .. })));
    }

    #[test]
    fn records_before_a_time_to_come_are_skipped_from_the_front_only() {
        let record = |offset, timestamp_ms| Record {
            offset,
            timestamp_ms,
            attributes: 0,
            value: Default::default(),
        };
        let mut records = vec![record(0, 5), record(1, 9), record(2, 10), record(3, 8)];
        skip_before(&mut records, Some(10));
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [2, 3]);
        skip_before(&mut records, None);
        assert_eq!(records.len(), 2);
    }
}
