//! The per-connection recorder: follows the session beside the relay, never in its way.
//!
//! It has two halves. [`Recorder`] runs in the connection's own task: it feeds the chunks the
//! pumps relay to the [`SessionTracker`] and logs one line per completed command, at once and
//! without a hand-off, because handing every chunk to another task cost more than the work
//! itself (on these 2-core VMs, about a third of the relay's CPU time on bulk FETCH went to
//! running that task on the other core by turns). When the session is recorded, the events
//! go on to [`write()`], a task that owns the [`TranscriptWriter`] and writes them in
//! batches: everything queued is encoded, then written with one call. With `--out none` there
//! is no such task and nothing is handed off.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::{Event, Kind, SessionTracker, Side};
use crate::transcript::format::{CompressedCounts, EndRecord, TlsRecord};

/// What the pumps tell the recorder.
#[derive(Debug)]
pub enum RelayEvent {
    /// `side` sent these bytes; they were relayed.
    Bytes { side: Side, t_us: u64, data: Bytes },
    /// Something that is not relayed bytes, for the transcript as it is.
    Said(Annotation),
    /// The connection is over.
    End { t_us: u64, reason: String },
}

/// What the relay says about a session besides its bytes.
#[derive(Debug)]
pub enum Annotation {
    /// A TLS handshake finished on one leg; what follows is decrypted IMAP.
    Tls(Box<TlsRecord>),
    /// Bytes deliberately not relayed.
    Dropped {
        side: Side,
        t_us: u64,
        data: Bytes,
        reason: String,
    },
    Error {
        t_us: u64,
        during: String,
        message: String,
    },
    Note {
        t_us: u64,
        side: Option<Side>,
        text: String,
    },
}

/// What the recorder passes on to the transcript writer.
#[derive(Debug)]
pub enum Record {
    /// What the tracker made of one relayed chunk, in order.
    Events(Vec<Event>),
    Said(Annotation),
    /// The tracker's last events (an unfinished message, unanswered commands), then the end.
    End(Vec<Event>, EndRecord),
}

/// The half of the recorder that runs in the connection task.
///
/// What the pumps tell it waits in a queue, in order, and comes out one [`Record`] at a time
/// ([`Recorder::next_record`]), each of at most [`EVENTS_PER_CALL`] events: a peer's flood of
/// empty lines (two bytes each, an event of a hundred or more) then fills the transcript
/// thread's queue a bounded piece at a time, and the relay waits for room between pieces,
/// instead of one 256 KiB read becoming 128k events at once.
///
/// [`EVENTS_PER_CALL`]: crate::protocol::tracker::EVENTS_PER_CALL
pub struct Recorder {
    id: u64,
    tracker: SessionTracker,
    /// Told and not yet followed: at most what each pump read before it waited.
    queue: VecDeque<RelayEvent>,
    scratch: Vec<Event>,
    bytes_from: [u64; 2],
    messages: u64,
    /// Whether the transcript is kept; `false` with `--out none`.
    keeps: bool,
    ended: bool,
    /// The client leg was to be upgraded with STARTTLS and has not been yet: a login now
    /// crosses both legs in clear, which a person should hear of.
    awaiting_starttls: bool,
}

impl Recorder {
    /// `keeps`: whether a transcript is written (the tracker then keeps whole messages).
    pub fn new(id: u64, keeps: bool) -> Recorder {
        Recorder {
            id,
            tracker: if keeps {
                SessionTracker::new()
            } else {
                SessionTracker::heads_only()
            },
            queue: VecDeque::new(),
            scratch: Vec::new(),
            bytes_from: [0, 0],
            messages: 0,
            keeps,
            ended: false,
            awaiting_starttls: false,
        }
    }

    /// The client leg is meant to use STARTTLS (`--client-tls starttls`): a login before it is
    /// warned of, in the log and in the transcript.
    pub fn expecting_starttls(mut self) -> Recorder {
        self.awaiting_starttls = true;
        self
    }

    /// Whether the end was recorded, or is queued to be.
    pub fn ended(&self) -> bool {
        self.ended
            || self
                .queue
                .iter()
                .any(|e| matches!(e, RelayEvent::End { .. }))
    }

    /// See [`SessionTracker::server_may_send_more`].
    pub fn server_may_send_more(&self) -> bool {
        self.tracker.server_may_send_more()
    }

    /// Queues `event` behind what was told before; [`Recorder::next_record`] follows it.
    pub fn queue(&mut self, event: RelayEvent) {
        if let RelayEvent::Bytes { side, data, .. } = &event {
            self.bytes_from[*side as usize] += data.len() as u64;
        }
        self.queue.push_back(event);
    }

    /// Queues `event` and returns the first record there is (see [`Recorder::next_record`]).
    pub fn handle(&mut self, event: RelayEvent) -> Option<Record> {
        self.queue(event);
        self.next_record()
    }

    /// Follows what is queued until it makes a record for the transcript writer, and returns
    /// it; `None` once the queue is empty. Without a transcript (`--out none`) the whole queue
    /// is followed and nothing is returned.
    pub fn next_record(&mut self) -> Option<Record> {
        while let Some(event) = self.queue.pop_front() {
            if let Some(record) = self.follow(event) {
                return Some(record);
            }
        }
        None
    }

    /// Follows one event, or 4096 events' worth of its bytes (see
    /// [`SessionTracker::on_bytes_bounded`]), the rest of which goes back to the front of the
    /// queue.
    fn follow(&mut self, event: RelayEvent) -> Option<Record> {
        let record = match event {
            RelayEvent::Bytes { side, t_us, data } => {
                let progress = self
                    .tracker
                    .on_bytes_bounded(side, t_us, &data, &mut self.scratch);
                if progress.more {
                    let data = data.slice(progress.taken..);
                    self.queue
                        .push_front(RelayEvent::Bytes { side, t_us, data });
                }
                let events = self.drain();
                (!events.is_empty()).then_some(Record::Events(events))
            }
            RelayEvent::Said(said) => {
                if let Annotation::Tls(tls) = &said {
                    self.tracker.tls_established();
                    if tls.leg == "client" {
                        self.awaiting_starttls = false;
                    }
                }
                Some(Record::Said(said))
            }
            RelayEvent::End { t_us, reason } => {
                self.ended = true;
                // The tracker's last events (an unfinished message), then the end line.
                self.tracker.finish(t_us, &mut self.scratch);
                let last = self.drain();
                let end = EndRecord {
                    t_us,
                    reason,
                    bytes_from_client: self.bytes_from[Side::Client as usize],
                    bytes_from_server: self.bytes_from[Side::Server as usize],
                    messages: self.messages,
                    unanswered: self
                        .tracker
                        .unanswered()
                        .into_iter()
                        .map(|(seq, ..)| seq)
                        .collect(),
                    user: self.tracker.user().map(String::from),
                    compressed: self.tracker.compression().map(|[c, s]| CompressedCounts {
                        client_compressed: c.0,
                        client_inflated: c.1,
                        server_compressed: s.0,
                        server_inflated: s.1,
                    }),
                    lost_bytes: 0,
                    counts: None,
                };
                return self.keeps.then_some(Record::End(last, end));
            }
        };
        if self.keeps { record } else { None }
    }

    /// Counts and logs the tracker's events; returns them when they are kept.
    fn drain(&mut self) -> Vec<Event> {
        let mut warnings = Vec::new();
        for event in &self.scratch {
            if let Event::Message(m) = event {
                self.messages += 1;
                if m.kind == Kind::Completion {
                    log_completion(self.id, m);
                }
                let login = m.kind == Kind::Command
                    && matches!(m.name.as_deref(), Some("LOGIN" | "AUTHENTICATE"));
                if login && self.awaiting_starttls {
                    let text = format!(
                        "{} before STARTTLS: the client sent its credentials in clear, and \
                         imapscope relayed them to the server in clear too (the client may be \
                         set to use STARTTLS only when it can, or not at all)",
                        m.name.as_deref().unwrap_or_default()
                    );
                    tracing::warn!("#{} {text}", self.id);
                    warnings.push(Event::Note {
                        seq: Some(m.seq),
                        from: Side::Client,
                        t_us: m.t_us,
                        text,
                    });
                }
            }
        }
        self.scratch.extend(warnings);
        if !self.keeps {
            self.scratch.clear();
            return Vec::new();
        }
        std::mem::take(&mut self.scratch)
    }
}

/// `#3 A2 SELECT INBOX -> OK 0.41 ms`
fn log_completion(id: u64, m: &crate::protocol::Message) {
    // Checked first: the escaping below is work, and `--quiet` or RUST_LOG may drop the line.
    if !tracing::enabled!(target: "imapscope::command", tracing::Level::INFO) {
        return;
    }
    // A peer's control characters and bidi overrides are written out, not sent to the
    // terminal the log goes to.
    let tag = crate::show::visible(m.tag.as_deref().unwrap_or("?"));
    let summary = crate::show::visible(m.detail().summary.as_deref().unwrap_or("?"));
    let status = m.status.map_or("?", |s| s.as_str());
    let ms = m.detail().latency_us.unwrap_or(0) as f64 / 1000.0;
    tracing::info!(target: "imapscope::command", "#{id} {tag} {summary} -> {status} {ms:.2} ms");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::transcript_thread::TranscriptThread;
    use crate::transcript::TranscriptWriter;
    use crate::transcript::format::{Record as Line, SessionRecord};
    use crate::transcript::reader::parse_transcript;

    fn bytes(side: Side, t_us: u64, data: &'static [u8]) -> RelayEvent {
        RelayEvent::Bytes {
            side,
            t_us,
            data: Bytes::from_static(data),
        }
    }

    fn end(t_us: u64) -> RelayEvent {
        RelayEvent::End {
            t_us,
            reason: "client closed".into(),
        }
    }

    /// A short session: greeting, LOGIN with a password, its OK, and a command left unanswered.
    fn session() -> Vec<RelayEvent> {
        vec![
            bytes(Side::Server, 0, b"* OK ready\r\n"),
            bytes(Side::Client, 10, b"a1 LOGIN alice s3cret\r\n"),
            bytes(Side::Server, 20, b"a1 OK Logged in\r\n"),
            RelayEvent::Said(Annotation::Note {
                t_us: 25,
                side: None,
                text: "a note".into(),
            }),
            bytes(Side::Client, 30, b"a2 NOOP\r\n"),
        ]
    }

    /// Runs `events` through a recorder and the transcript thread; returns the transcript.
    async fn record(events: Vec<RelayEvent>) -> Vec<Line> {
        let mut recorder = Recorder::new(7, true);
        let mut writer = TranscriptWriter::in_memory(true);
        writer.session(SessionRecord {
            version: crate::transcript::FORMAT_VERSION,
            imapscope: "test".into(),
            id: 7,
            client: "127.0.0.1:1".into(),
            listen: "127.0.0.1:2".into(),
            upstream: "127.0.0.1:3".into(),
            start: "2026-11-26T00:00:00Z".into(),
            redaction: true,
        });
        let thread = TranscriptThread::start().unwrap();
        let sink = thread.open(7, writer).unwrap();
        for event in events {
            if let Some(record) = recorder.handle(event) {
                sink.send(record).await;
            }
        }
        let text = sink.close().await.unwrap().take_memory();
        thread.stop().await;
        assert!(
            !String::from_utf8_lossy(&text).contains("s3cret"),
            "redaction applies on this path"
        );
        parse_transcript(&text[..], "test").unwrap().records
    }

    #[test]
    fn a_login_before_the_expected_starttls_gets_a_note_and_one_after_it_none() {
        let notes = |recorder: &mut Recorder, events: Vec<RelayEvent>| {
            events
                .into_iter()
                .filter_map(|e| recorder.handle(e))
                .flat_map(|r| match r {
                    Record::Events(events) => events,
                    _ => Vec::new(),
                })
                .filter(
                    |e| matches!(e, Event::Note { text, .. } if text.contains("before STARTTLS")),
                )
                .count()
        };
        let mut plain = Recorder::new(1, true).expecting_starttls();
        assert_eq!(notes(&mut plain, session()), 1);
        // Without STARTTLS expected, a plain login is what was asked for.
        assert_eq!(notes(&mut Recorder::new(2, true), session()), 0);
        // After the client leg's handshake, no note.
        let mut upgraded = Recorder::new(3, true).expecting_starttls();
        let tls = crate::transcript::format::TlsRecord {
            leg: "client".into(),
            ..Default::default()
        };
        let mut events = vec![RelayEvent::Said(Annotation::Tls(Box::new(tls)))];
        events.extend(session());
        assert_eq!(notes(&mut upgraded, events), 0);
    }

    #[test]
    fn without_a_transcript_nothing_is_handed_on() {
        let mut recorder = Recorder::new(1, false);
        for event in session() {
            assert!(recorder.handle(event).is_none());
        }
        assert!(!recorder.ended());
        assert!(recorder.handle(end(40)).is_none());
        assert!(recorder.ended());
    }

    #[tokio::test]
    async fn the_writer_gets_every_message_in_order_and_the_end_counts_them() {
        let mut events = session();
        events.push(end(40));
        let lines = record(events).await;
        let messages: Vec<(u64, Side)> = lines
            .iter()
            .filter_map(|l| match l {
                Line::Message(m) => Some((m.t_us, m.from)),
                _ => None,
            })
            .collect();
        assert_eq!(
            messages,
            [
                (0, Side::Server),
                (10, Side::Client),
                (20, Side::Server),
                (30, Side::Client)
            ]
        );
        assert!(
            lines
                .iter()
                .any(|l| matches!(l, Line::Note(n) if n.note == "a note"))
        );
        let Some(Line::End(end)) = lines.last() else {
            panic!("no end line: {lines:?}");
        };
        assert_eq!(end.reason, "client closed");
        assert_eq!(end.bytes_from_client, 32);
        assert_eq!(end.bytes_from_server, 29);
        assert_eq!(end.messages, 4);
        assert_eq!(end.unanswered.len(), 1, "a2 NOOP had no answer");
        assert_eq!(end.user.as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn a_writer_left_without_an_end_still_writes_one() {
        let lines = record(session()).await;
        let Some(Line::End(end)) = lines.last() else {
            panic!("no end line: {lines:?}");
        };
        assert_eq!(end.reason, "relay stopped");
    }
}
