//! Every bit a frame carries, in one table: the log's own `flags` byte and
//! the callers' `attributes` byte (layout in `log::record`).
//!
//! ```text
//! byte        bit         name                  set by                         read by
//! flags       0b0000_0001 FLAG_BATCH_CONTINUES  the log: a batch's records     recovery; a follower's pull
//!                                               but its last (single node)     (finished_batches_len)
//! attributes  0b0000_0001 BINARY                api::append: a non-JSON value  api::render (value_base64)
//! attributes  0b0100_0000 BATCH_OPEN            mode::append: a cluster batch's cluster::tables
//!                                               records but its last
//! attributes  0b1000_0000 CONTROL               cluster::codec: Raft's own     every reader, which skips it
//!                                               entries; cluster::node: an
//!                                               aborted record, for replicas
//! ```
//!
//! The other bits are free. Attributes are stored and replicated
//! verbatim, so a `--follow` replica of a cluster member sees them too.
//!
//! A batch is whole or never, by one of two rules:
//! - **Single node** (`FLAG_BATCH_CONTINUES`): the log writes a batch into
//!   one segment in one write; recovery cuts a batch whose last record
//!   never reached the disk, and a follower applies only finished batches
//!   (`finished_batches_len`).
//! - **Cluster** (`BATCH_OPEN`): a batch is one Raft entry per record, and
//!   recovery must not cut what Raft was told is durable, so the flag is
//!   never set there. A batch is shown once its last record is applied; a
//!   batch still open when a control entry follows (a new leader's blank
//!   entry) is aborted, hidden on every node forever: a function of the log
//!   alone (see `cluster::tables` and `docs/cluster-design.md`).

/// Set on every record of a single-node batch but its last.
pub const FLAG_BATCH_CONTINUES: u8 = 0b0000_0001;

/// The bits of a frame's `attributes` byte.
pub mod attributes {
    /// The value is not JSON: answers carry it as `value_base64`.
    pub const BINARY: u8 = 0b0000_0001;
    /// Every record of a cluster batch but its last.
    pub const BATCH_OPEN: u8 = 0b0100_0000;
    /// A Raft control entry (a new leader's blank entry, a membership
    /// change), or a record of an aborted batch or of an append its guard
    /// refused (`cluster::tables`) as a replica gets it: it
    /// has an offset, but no reader shows it, as Kafka's consumers skip
    /// control records.
    pub const CONTROL: u8 = 0b1000_0000;
}

#[cfg(test)]
mod tests {
    use super::attributes::*;

    #[test]
    fn no_two_attribute_bits_are_the_same() {
        let bits = [BINARY, BATCH_OPEN, CONTROL];
        assert!(bits.iter().all(|b| b.count_ones() == 1));
        assert_eq!(bits.iter().fold(0, |all, b| all | b).count_ones(), bits.len() as u32);
    }
}
