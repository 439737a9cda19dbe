//! What the Raft log store costs a record, counted in instructions
//! (callgrind: repeatable on a loaded machine, where timings are not).
//!
//! ```text
//! cargo build --example raft_append
//! valgrind --tool=callgrind target/debug/examples/raft_append leader
//! valgrind --tool=callgrind target/debug/examples/raft_append follower
//! valgrind --tool=callgrind target/debug/examples/raft_append prepare
//! ```
//!
//! - `leader`: `LogStore::append` of entries as a leader has them (no
//!   frame yet), `BATCHES` batches of `BATCH` 1 KiB records.
//! - `follower`: the same entries as append-entries bodies, each decoded
//!   (`decode_append`, which checks the frames from the peer) and appended.
//! - `prepare`: only what both do before appending (entries, bodies), to
//!   subtract.
//!
//! `--fsync never`, so that the disk adds nothing but the copy into the page cache.

use bytes::Bytes;
use distlog::cluster::{Durable, LogStore, TypeConfig, UserRecord, decode_append, encode_append};
use distlog::log::{Durability, Log, LogConfig};
use openraft::EntryPayload;
use openraft::raft::AppendEntriesRequest;
use openraft::storage::{IOFlushed, RaftLogStorage};

const BATCH: u64 = 64;
const BATCHES: u64 = 32;
const RECORD_BYTES: usize = 1024;

type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;

fn entries(first: u64) -> Vec<Entry> {
    let value = Bytes::from(vec![b'x'; RECORD_BYTES]);
    (first..first + BATCH)
        .map(|index| Entry {
            log_id: openraft::type_config::alias::LogIdOf::<TypeConfig>::new(
                openraft::vote::leader_id_std::CommittedLeaderId::new(1),
                index,
            ),
            payload: EntryPayload::Normal(UserRecord::new(0, 1_700_000_000_000, value.clone())),
        })
        .collect()
}

fn body(entries: Vec<Entry>) -> Bytes {
    Bytes::from(encode_append(&AppendEntriesRequest {
        vote: openraft::impls::Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries,
    }))
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = LogConfig {
        durability: Durability::Never,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("log"), config).expect("open the log");
    let durable = Durable::open(dir.path().join("raft")).expect("open the raft dir");
    let mut store = LogStore::open(log.clone(), durable).expect("open the store");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let batches: Vec<Vec<Entry>> = (0..BATCHES).map(|b| entries(b * BATCH)).collect();
    let bodies: Vec<Bytes> = match mode.as_str() {
        "follower" | "prepare" => batches.iter().cloned().map(body).collect(),
        _ => Vec::new(),
    };
    runtime.block_on(async {
        match mode.as_str() {
            "leader" => {
                for batch in batches {
                    store.append(batch, IOFlushed::noop()).await.expect("append");
                }
            }
            "follower" => {
                for body in bodies {
                    let request = decode_append(body).expect("decode");
                    store.append(request.entries, IOFlushed::noop()).await.expect("append");
                }
            }
            "prepare" => {}
            _ => panic!("usage: raft_append leader|follower|prepare"),
        }
    });
    let appended = log.written_offset();
    println!("{mode}: {appended} records appended");
}
