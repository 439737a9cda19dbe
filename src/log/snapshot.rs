//! A reader over every store's bytes in offset order: a log snapshot that a
//! new replica (or a backup) can take as one stream of frames.

use std::io::{self, Read};
use std::sync::Arc;

use super::segment::Segment;

pub struct SnapshotReader {
    /// Segments with the store size the snapshot ends at in each.
    parts: Vec<(Arc<Segment>, u64)>,
    current: usize,
    position: u64,
}

impl SnapshotReader {
    pub(super) fn new(parts: Vec<(Arc<Segment>, u64)>) -> Self {
        SnapshotReader {
            parts,
            current: 0,
            position: 0,
        }
    }

    /// Bytes the whole snapshot holds.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|(_, end)| end).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((segment, end)) = self.parts.get(self.current) {
            if self.position >= *end {
                self.current += 1;
                self.position = 0;
                continue;
            }
            let n = (buf.len() as u64).min(end - self.position) as usize;
            let bytes = segment.read_bytes(self.position, n)?;
            let Some(into) = buf.get_mut(..n) else { return Ok(0) };
            into.copy_from_slice(&bytes);
            self.position += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}
