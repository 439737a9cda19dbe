//! What the storage tests know of the on-disk format: the frame layout from
//! the crate (`distlog::log`), and the segment file names and index entry
//! size, which the crate keeps private.

pub use distlog::log::{FLAG_BATCH_CONTINUES, FRAME_HEADER};

/// Bytes of one index entry: relative offset u32, position u64
/// (`src/log/index.rs`, not exported).
pub const INDEX_ENTRY: u64 = 12;

/// `max_index_bytes` for an index of `slots` entries.
pub const fn index_bytes(slots: u64) -> u64 {
    INDEX_ENTRY * slots
}

/// The store file of the segment whose first offset is `base`.
pub fn store_name(base: u64) -> String {
    format!("{base:020}.store")
}

/// The index file of the segment whose first offset is `base`.
pub fn index_name(base: u64) -> String {
    format!("{base:020}.index")
}
