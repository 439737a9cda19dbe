//! [`Stream`]: every record from an offset on, as they are appended, by
//! Server-Sent Events (`GET /?from=N`, `Accept: text/event-stream`: see
//! `sse`) from one member at a time, or by long polls
//! (`GET /?from=N&wait_ms=W`) to the members in turn where a server
//! refuses event streams.
//!
//! Either way it asks again from just past the last record it received
//! (for long polls, where the answer's `next_offset` said), so a
//! reconnect, a member that fails or a leader change neither skips a
//! record nor repeats one (committed offsets read the same on every
//! member); a record below that point is dropped should a server ever send
//! one. An event stream on a member that stops getting records the client
//! knows were committed (a lagging or cut-off follower) is left for
//! another member.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::read::{Start, is_beyond_end};
use crate::record::Record;
use crate::sse::{Event, Events, Opened};

/// How long an event stream may go without a record while the client knows
/// of committed records past it before another member is asked.
const STALL: Duration = Duration::from_secs(5);
/// How long an event stream may be silent (the server sends a keep-alive
/// every 15 s) before it is taken for broken.
const SILENT: Duration = Duration::from_secs(40);

/// How the stream gets its records.
enum Transport {
    /// Event streams; one is open or none (connect on the next fetch).
    Events(Option<Events>),
    /// A server refused an event stream: long polls from then on.
    LongPolls,
}

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
    transport: Transport,
    /// When the open event stream last brought a record (or opened).
    last_record: Instant,
    /// A wait before connecting again, after a failure.
    pause: Option<Duration>,
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
            transport: Transport::Events(None),
            last_record: Instant::now(),
            pause: None,
        }
    }
}

impl Stream {
    /// Tails by long polls only, never asking for an event stream.
    pub fn long_polls(mut self) -> Stream {
        self.transport = Transport::LongPolls;
        self
    }

    /// Whether the stream reads event streams (it does until a server
    /// refuses one).
    pub fn uses_events(&self) -> bool {
        matches!(self.transport, Transport::Events(_))
    }

    /// The server whose event stream is open, if one is.
    pub fn source(&self) -> Option<&str> {
        match &self.transport {
            Transport::Events(Some(events)) => Some(&events.url),
            _ => None,
        }
    }

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
            if self.buffered.is_empty()
                && let Some(pause) = self.pause.take()
            {
                tokio::time::sleep(pause).await;
            }
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
        if self.uses_events() {
            if matches!(self.transport, Transport::Events(None)) {
                match self.open_events().await? {
                    Some(events) if self.uses_events() => {
                        self.last_record = Instant::now();
                        self.transport = Transport::Events(Some(events));
                    }
                    _ => return Ok(()),
                }
            }
            let Transport::Events(Some(events)) = &mut self.transport else {
                return Ok(());
            };
            let read = Self::read_event(
                events,
                &self.client,
                &mut self.fetch_from,
                &mut self.buffered,
                &mut self.last_record,
            )
            .await;
            return read.or_else(|error| self.broken(error));
        }
        self.long_poll().await
    }

    /// Opens an event stream from `fetch_from` on the next member that
    /// gives one; `None` after a wait if none did (or after falling back to
    /// long polls).
    async fn open_events(&mut self) -> Result<Option<Events>> {
        let inner = &self.client.inner;
        if !inner.topology().is_known()
            && let Err(error) = inner.discover().await
        {
            return self.broken(error).map(|()| None);
        }
        let turn = inner.turn.fetch_add(1, Ordering::Relaxed);
        let order = inner.topology().read_order(turn);
        let path = inner.log_path(&format!("/?from={}", self.fetch_from));
        let mut last = None;
        for url in order {
            match inner.open_events(&url, &path).await {
                Ok(Opened::Events(events)) => return Ok(Some(events)),
                Ok(Opened::Refused) => {
                    self.transport = Transport::LongPolls;
                    return Ok(None);
                }
                Err(error) if error.is_retryable() || matches!(error, Error::Protocol { .. }) => {
                    inner.topology().failed(&url);
                    last = Some(error);
                }
                // A member behind the stream: another may have the records.
                Err(error) if is_beyond_end(&error, self.fetch_from) => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        let error = last.unwrap_or_else(|| Error::Config("no member to read from".into()));
        self.broken(error).map(|()| None)
    }

    /// Reads one event into the buffer.
    async fn read_event(
        events: &mut Events,
        client: &Client,
        fetch_from: &mut u64,
        buffered: &mut VecDeque<Record>,
        last_record: &mut Instant,
    ) -> Result<()> {
        loop {
            match events.next(STALL.min(SILENT)).await? {
                Some(Event::Record(record)) => {
                    *last_record = Instant::now();
                    if record.offset >= *fetch_from {
                        *fetch_from = record.offset + 1;
                        client.inner.note_next(*fetch_from);
                        buffered.push_back(record);
                    }
                    return Ok(());
                }
                Some(Event::Gap { from, to }) => {
                    return Err(Error::Server {
                        url: events.url.clone(),
                        status: 404,
                        code: "offset_not_found".into(),
                        message: format!("records {from}..{to} were deleted before the stream reached them"),
                        body: serde_json::json!({"code": "offset_not_found", "lowest_offset": to}),
                        retry_after: None,
                    });
                }
                Some(Event::Failed(reason)) => {
                    return Err(Error::Protocol {
                        url: events.url.clone(),
                        reason: format!("the event stream ended on an error: {reason}"),
                    });
                }
                None => {
                    let stalled = last_record.elapsed() >= STALL && client.inner.known_next() > *fetch_from;
                    if stalled || last_record.elapsed() >= SILENT {
                        return Err(Error::OutcomeUnknown {
                            url: events.url.clone(),
                            reason: "the event stream stalled behind committed records".into(),
                        });
                    }
                }
            }
        }
    }

    /// After an event stream failed: closes it, and waits before the next
    /// one unless the failure is one retrying cannot mend.
    fn broken(&mut self, error: Error) -> Result<()> {
        let gone = matches!(&error, Error::Server { code, .. } if code == "offset_not_found")
            && !is_beyond_end(&error, self.fetch_from);
        if let Transport::Events(open) = &mut self.transport
            && let Some(events) = open.take()
        {
            self.client.inner.topology().failed(&events.url);
        }
        if gone {
            return Err(error);
        }
        self.failures += 1;
        self.pause = Some(self.client.inner.settings.member_backoff.delay(self.failures));
        Ok(())
    }

    async fn long_poll(&mut self) -> Result<()> {
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
