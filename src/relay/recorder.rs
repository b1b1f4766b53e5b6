//! The per-connection recorder: runs beside the relay, never in its way.
//!
//! It receives the chunks the pumps relayed, feeds them to the [`SessionTracker`], logs one
//! line per completed command and passes every event to the [`TranscriptWriter`]. Events are
//! written in batches: everything queued is processed, then written with one call.

use std::path::PathBuf;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::{Event, Kind, SessionTracker, Side};
use crate::transcript::TranscriptWriter;
use crate::transcript::format::{CompressedCounts, EndRecord, TlsRecord};

/// What the pumps tell the recorder.
#[derive(Debug)]
pub enum RelayEvent {
    /// `side` sent these bytes; they were relayed.
    Bytes { side: Side, t_us: u64, data: Bytes },
    /// A TLS handshake finished on one leg; what follows is decrypted IMAP.
    Tls(TlsRecord),
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
    /// The connection is over.
    End { t_us: u64, reason: String },
}

/// Encoded bytes after which a batch is written even if more events are queued.
const BATCH_BYTES: usize = 1 << 20;

/// Records until the connection ends; returns the transcript's path.
pub async fn run(
    id: u64,
    mut events: mpsc::Receiver<RelayEvent>,
    writer: TranscriptWriter,
) -> Option<PathBuf> {
    let tracker = if writer.keeps_nothing() {
        SessionTracker::heads_only()
    } else {
        SessionTracker::new()
    };
    let mut recorder = Recorder {
        id,
        tracker,
        writer,
        scratch: Vec::new(),
        bytes_from: [0, 0],
        messages: 0,
        ended: false,
    };
    // Every batch is written as soon as it is encoded, so a `kill -9` loses at most what was
    // queued at that moment. (Holding small batches back for 10 ms took 10-20 us off
    // recording's added round trip, but broke that promise; not done.)
    while let Some(event) = events.recv().await {
        recorder.handle(event);
        while recorder.writer.pending_len() < BATCH_BYTES {
            match events.try_recv() {
                Ok(event) => recorder.handle(event),
                Err(_) => break,
            }
        }
        recorder.flush().await;
    }
    if !recorder.ended {
        // The connection task went away without saying why.
        recorder.handle(RelayEvent::End {
            t_us: 0,
            reason: "relay stopped".into(),
        });
        recorder.flush().await;
    }
    let gap = recorder.writer.unnoted_gap();
    if gap > 0 {
        tracing::error!(
            "#{id} the disk never took the transcript's last {gap} bytes: {} stops at the gap, without its end line",
            recorder
                .writer
                .path()
                .map_or("the transcript".into(), |p| p.display().to_string())
        );
    }
    recorder.writer.path().map(PathBuf::from)
}

impl Recorder {
    /// Writes what is pending; a failure is logged and the session goes on.
    async fn flush(&mut self) {
        if let Err(e) = self.writer.flush().await {
            tracing::error!(
                "#{} transcript write failed: {e}; relaying goes on, the transcript will show a gap",
                self.id
            );
        }
    }
}

struct Recorder {
    id: u64,
    tracker: SessionTracker,
    writer: TranscriptWriter,
    scratch: Vec<Event>,
    bytes_from: [u64; 2],
    messages: u64,
    ended: bool,
}

impl Recorder {
    fn handle(&mut self, event: RelayEvent) {
        match event {
            RelayEvent::Bytes { side, t_us, data } => {
                self.bytes_from[side as usize] += data.len() as u64;
                self.tracker.on_bytes(side, t_us, &data, &mut self.scratch);
                self.drain();
            }
            RelayEvent::Tls(record) => {
                self.tracker.tls_established();
                self.writer.tls(record);
            }
            RelayEvent::Dropped {
                side,
                t_us,
                data,
                reason,
            } => self.writer.dropped(t_us, side, &data, &reason),
            RelayEvent::Error {
                t_us,
                during,
                message,
            } => self.writer.error(t_us, &during, &message),
            RelayEvent::Note { t_us, side, text } => self.writer.note(t_us, side, &text),
            RelayEvent::End { t_us, reason } => {
                self.tracker.finish(t_us, &mut self.scratch);
                self.drain();
                self.writer.end(EndRecord {
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
                });
                self.ended = true;
            }
        }
    }

    fn drain(&mut self) {
        for event in self.scratch.drain(..) {
            if let Event::Message(m) = &event {
                self.messages += 1;
                if m.kind == Kind::Completion {
                    log_completion(self.id, m);
                }
            }
            self.writer.event(event);
        }
    }
}

/// `#3 A2 SELECT INBOX -> OK 0.41 ms`
fn log_completion(id: u64, m: &crate::protocol::Message) {
    let tag = m.tag.as_deref().unwrap_or("?");
    let summary = m.detail().summary.as_deref().unwrap_or("?");
    let status = m.status.map_or("?", |s| s.as_str());
    let ms = m.detail().latency_us.unwrap_or(0) as f64 / 1000.0;
    tracing::info!(target: "imapscope::command", "#{id} {tag} {summary} -> {status} {ms:.2} ms");
}
