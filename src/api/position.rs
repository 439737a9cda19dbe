//! A reader's position in the log, for every route that reads from an
//! offset on (`read`'s ranges, `sse`'s tail, `frames`): whether it may
//! start there, and waiting for records past it.

use std::time::Duration;

use super::error::{ApiError, ApiResult};
use super::state::AppState;
use crate::log::Log;

/// Whether `from` is a valid place to read or wait at.
pub fn check_from(log: &Log, from: u64) -> ApiResult<()> {
    let (lowest, next) = (log.lowest_offset(), log.next_offset());
    if from < lowest || from > next {
        return Err(ApiError::OffsetNotFound {
            offset: from,
            lowest,
            next,
        });
    }
    Ok(())
}

/// Waits until a record at or after `from` exists, `wait` passes, or the
/// server starts shutting down, whichever comes first.
pub async fn wait_for_records(state: &AppState, from: u64, wait: Duration) {
    let mut appended = state.log.subscribe();
    let mut shutdown = state.shutdown.clone();
    let arrived = async {
        loop {
            if *appended.borrow_and_update() > from {
                return;
            }
            if appended.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = arrived => {}
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}
