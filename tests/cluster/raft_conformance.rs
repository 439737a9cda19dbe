//! openraft's storage conformance suite against the real store: our
//! segmented log (as the Raft log) and the state machine, in a temporary
//! directory per case.

use distlog::cluster::{Durable, LogStore, StateMachine, TypeConfig};
use distlog::log::{Log, LogConfig};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

struct Builder;

fn storage_error(e: std::io::Error) -> StorageError<TypeConfig> {
    StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e)
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let config = LogConfig {
            max_segment_bytes: 1 << 20,
            max_record_bytes: 64 * 1024,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config).map_err(|e| storage_error(std::io::Error::other(e.to_string())))?;
        let durable = Durable::open(dir.path().join("raft")).map_err(storage_error)?;
        let store = LogStore::open(log, durable.clone()).map_err(storage_error)?;
        let sm = StateMachine::open(store.clone(), durable).map_err(storage_error)?;
        Ok((dir, store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_passes_openraft_conformance_suite() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Suite::test_all(Builder).await.expect("openraft's storage suite");
}
