//! [`Stream`]: every record from an offset on, as they are appended, by
//! long polls (`GET /?from=N&wait_ms=W`) to the members in turn.
//!
//! It asks again from where the last answer's `next_offset` said, and only
//! once it has handed out every record of that answer, so a reconnect, a
//! member that fails or a leader change neither skips a record nor repeats
//! one (committed offsets read the same on every member); a record below
//! the position is dropped should a server ever send one.

use std::collections::VecDeque;
use std::time::Duration;

use crate::client::Client;
use crate::error::Result;
use crate::read::{Start, is_beyond_end};
use crate::record::Record;

/// Records from an offset on; see [`Client::stream`].
pub struct Stream {
    client: Client,
    /// The next offset to hand out (every record below it was).
    position: u64,
    /// Where the next long poll starts: `position`, or past offsets no
    /// reader is shown.
    fetch_from: u64,
    buffered: VecDeque<Record>,
    wait: Duration,
    limit: u32,
    failures: u32,
}

impl Client {
    /// A stream of the records from `from` on, waiting for new ones.
    ///
    /// ```no_run
    /// # async fn run(client: distlog_client::Client) -> Result<(), distlog_client::Error> {
    /// let mut stream = client.stream(0);
    /// while let Some(record) = stream.next().await? {
    ///     println!("{} {:?}", record.offset, record.json());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self, from: u64) -> Stream {
        Stream {
            client: self.clone(),
            position: from,
            fetch_from: from,
            buffered: VecDeque::new(),
            wait: Duration::from_secs(10),
            limit: 1000,
            failures: 0,
        }
    }
}

impl Stream {
    /// How long each long poll waits for new records (default 10 s).
    pub fn wait(mut self, wait: Duration) -> Stream {
        self.wait = wait;
        self
    }

    /// Records per answer at most (default 1000).
    pub fn page_size(mut self, limit: u32) -> Stream {
        self.limit = limit.max(1);
        self
    }

    /// The offset to resume from: every record below it has been handed
    /// out.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next record, waiting for one as long as it takes. Server
    /// failures are ridden out (retried with back-off); an error is one
    /// that retrying cannot mend, such as records deleted by retention
    /// before the stream reached them (`offset_not_found` below the lowest
    /// offset). `Ok(None)` is
    /// never returned today; it is kept for a stream that can end.
    pub async fn next(&mut self) -> Result<Option<Record>> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                if record.offset < self.position {
                    continue;
                }
                self.position = record.offset + 1;
                return Ok(Some(record));
            }
            self.fetch().await?;
        }
    }

    /// The records already received and not yet handed out, without
    /// waiting (empty once they are all handed out).
    pub fn drain_buffered(&mut self) -> Vec<Record> {
        let mut records = Vec::new();
        while let Some(record) = self.buffered.pop_front() {
            if record.offset >= self.position {
                self.position = record.offset + 1;
                records.push(record);
            }
        }
        records
    }

    async fn fetch(&mut self) -> Result<()> {
        let start = Start::Offset(self.fetch_from);
        match self.client.page(start, self.limit, self.wait).await {
            Ok(page) => {
                self.failures = 0;
                if page.next_offset > self.fetch_from {
                    self.fetch_from = page.next_offset;
                }
                self.buffered.extend(page.records);
                Ok(())
            }
            // Every member said the log ends before `fetch_from` (each lags
            // behind the answer that gave it): wait for them.
            Err(error) if error.is_retryable() || is_beyond_end(&error, self.fetch_from) => {
                self.failures += 1;
                tokio::time::sleep(self.client.inner.settings.member_backoff.delay(self.failures)).await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("position", &self.position)
            .field("fetch_from", &self.fetch_from)
            .field("buffered", &self.buffered.len())
            .finish()
    }
}
