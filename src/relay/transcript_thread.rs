//! One thread that encodes and writes every recorded session's transcript.
//!
//! Each session's [`TranscriptWriter`] lives here, so every transcript byte still passes
//! through the one writer that redacts. The connection tasks only hand over what the tracker
//! made of each chunk ([`Record`]) and go on relaying: nothing on the relay's threads waits for
//! the disk, nor wakes a task per batch. Before, each session had a writer task that sent every
//! batch to tokio's blocking pool and waited for it: a recorded NOOP cost four task wake-ups
//! besides the relaying, and 200 recorded sessions ran at 0.6 of socat's commands per second.
//! Here one wake-up of this thread takes whatever all sessions queued since the last one (see
//! docs/performance.md for the numbers).
//!
//! What stays as it was:
//! - **`kill -9`** loses at most what was queued at that moment: every wake-up writes out
//!   everything it took before sleeping again.
//! - **A slow disk** slows only recorded sessions, through back-pressure: each session may have
//!   at most [`QUEUE_RECORDS`] records not yet written (bounded memory), after which its relay
//!   waits for the disk, asynchronously, while the lanes go on with everything else.
//! - **A full disk** loses transcript bytes, never relayed ones, and the transcript says where
//!   its gap is (see [`TranscriptWriter::flush_now`]).

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{Semaphore, oneshot};

use super::recorder::{Annotation, Record};
use crate::transcript::TranscriptWriter;
use crate::transcript::format::EndRecord;

/// Records a session may have queued and not yet written before its relay waits (bounded
/// memory, back-pressure from a slow disk). A record is what the tracker made of one relayed
/// chunk: at most about 1 MiB of held message bytes (two parts of a large literal, each up to
/// 256 KiB long in a buffer up to twice that), so a session holds at most about 16 MiB here.
pub const QUEUE_RECORDS: usize = 16;

/// Encoded bytes after which this thread writes out what it has even if more is queued.
const BATCH_BYTES: usize = 1 << 20;

enum Job {
    Open {
        session: u64,
        writer: Box<TranscriptWriter>,
        room: Arc<Semaphore>,
    },
    Record {
        session: u64,
        record: Record,
    },
    /// The session's sink is gone; the writer goes back through `done`.
    Close {
        session: u64,
        done: Option<oneshot::Sender<TranscriptWriter>>,
    },
}

/// The thread; stopping it waits until every transcript handed to it is written.
pub struct TranscriptThread {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TranscriptThread {
    pub fn start() -> std::io::Result<TranscriptThread> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("imapscope-transcripts".into())
            .spawn(move || run(queue))?;
        Ok(TranscriptThread {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands `writer` to the thread; what the session records goes through the sink.
    pub fn open(&self, session: u64, writer: TranscriptWriter) -> Option<TranscriptSink> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let room = Arc::new(Semaphore::new(QUEUE_RECORDS));
        jobs.send(Job::Open {
            session,
            writer: Box::new(writer),
            room: room.clone(),
        })
        .ok()?;
        Some(TranscriptSink {
            session,
            jobs,
            room,
            closed: false,
        })
    }

    /// Waits until every session's sink is gone and all is written, then ends the thread.
    pub async fn stop(&self) {
        drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// One session's way to the thread.
pub struct TranscriptSink {
    session: u64,
    jobs: mpsc::Sender<Job>,
    room: Arc<Semaphore>,
    closed: bool,
}

impl TranscriptSink {
    /// Queues `record`; waits only while the session already has [`QUEUE_RECORDS`] unwritten.
    pub async fn send(&self, record: Record) {
        match self.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return, // the thread is gone: nothing can be recorded any more
        }
        let _ = self.jobs.send(Job::Record {
            session: self.session,
            record,
        });
    }

    /// Queues `record` without waiting (for the end of a connection that panicked).
    pub fn send_now(&self, record: Record) {
        if let Ok(permit) = self.room.try_acquire() {
            permit.forget();
        }
        let _ = self.jobs.send(Job::Record {
            session: self.session,
            record,
        });
    }

    /// Ends the session's transcript (with a "relay stopped" end line if no end was
    /// recorded) and returns its writer once everything is written.
    pub async fn close(mut self) -> Option<TranscriptWriter> {
        let (done, writer) = oneshot::channel();
        self.closed = true;
        self.jobs
            .send(Job::Close {
                session: self.session,
                done: Some(done),
            })
            .ok()?;
        writer.await.ok()
    }
}

impl Drop for TranscriptSink {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.jobs.send(Job::Close {
                session: self.session,
                done: None,
            });
        }
    }
}

/// A session as the thread holds it.
struct Open {
    writer: TranscriptWriter,
    room: Arc<Semaphore>,
    ended: bool,
    /// Records taken since the last write: given back to the session once written.
    taken: usize,
}

fn run(queue: mpsc::Receiver<Job>) {
    let mut sessions: HashMap<u64, Open> = HashMap::new();
    let mut touched: Vec<u64> = Vec::new();
    let mut closing: Vec<(u64, Option<oneshot::Sender<TranscriptWriter>>)> = Vec::new();
    while let Ok(job) = queue.recv() {
        let mut pending = take(job, &mut sessions, &mut touched, &mut closing);
        while pending < BATCH_BYTES {
            match queue.try_recv() {
                Ok(job) => pending += take(job, &mut sessions, &mut touched, &mut closing),
                Err(_) => break,
            }
        }
        write_out(&mut sessions, &mut touched);
        for (session, done) in closing.drain(..) {
            let Some(mut open) = sessions.remove(&session) else {
                continue;
            };
            if !open.ended {
                // The connection went away without saying why.
                handle(session, &mut open, Record::End(Vec::new(), relay_stopped()));
            }
            flush(session, &mut open.writer);
            report_gap(session, &open.writer);
            if let Some(done) = done {
                let _ = done.send(open.writer);
            }
        }
    }
}

/// Takes one job; returns how many encoded bytes it added.
fn take(
    job: Job,
    sessions: &mut HashMap<u64, Open>,
    touched: &mut Vec<u64>,
    closing: &mut Vec<(u64, Option<oneshot::Sender<TranscriptWriter>>)>,
) -> usize {
    match job {
        Job::Open {
            session,
            writer,
            room,
        } => {
            sessions.insert(
                session,
                Open {
                    writer: *writer,
                    room,
                    ended: false,
                    taken: 0,
                },
            );
            0
        }
        Job::Record { session, record } => {
            let Some(open) = sessions.get_mut(&session) else {
                return 0;
            };
            let before = open.writer.pending_len();
            handle(session, open, record);
            open.taken += 1;
            if !touched.contains(&session) {
                touched.push(session);
            }
            open.writer.pending_len().saturating_sub(before)
        }
        Job::Close { session, done } => {
            closing.push((session, done));
            0
        }
    }
}

/// Writes out every session that got records, then gives them their room back.
fn write_out(sessions: &mut HashMap<u64, Open>, touched: &mut Vec<u64>) {
    for session in touched.drain(..) {
        if let Some(open) = sessions.get_mut(&session) {
            flush(session, &mut open.writer);
            open.room.add_permits(std::mem::take(&mut open.taken));
        }
    }
}

fn handle(session: u64, open: &mut Open, record: Record) {
    let writer = &mut open.writer;
    match record {
        Record::Events(events) => {
            for event in events {
                writer.event(event);
            }
        }
        Record::Said(said) => match said {
            Annotation::Tls(record) => writer.tls(*record),
            Annotation::Dropped {
                side,
                t_us,
                data,
                reason,
            } => writer.dropped(t_us, side, &data, &reason),
            Annotation::Error {
                t_us,
                during,
                message,
            } => writer.error(t_us, &during, &message),
            Annotation::Note { t_us, side, text } => writer.note(t_us, side, &text),
        },
        Record::End(events, end) => {
            for event in events {
                writer.event(event);
            }
            writer.end(end);
            open.ended = true;
        }
    }
    if writer.pending_len() >= BATCH_BYTES {
        // A large literal: written as it comes, not held until the queue is empty.
        flush(session, writer);
    }
}

/// Writes what is pending; a failure is logged and the session goes on.
fn flush(session: u64, writer: &mut TranscriptWriter) {
    if let Err(e) = writer.flush_now() {
        tracing::error!(
            "#{session} transcript write failed: {e}; relaying goes on, the transcript will show a gap"
        );
    }
}

fn report_gap(session: u64, writer: &TranscriptWriter) {
    let gap = writer.unnoted_gap();
    if gap > 0 {
        tracing::error!(
            "#{session} the disk never took the transcript's last {gap} bytes: {} stops at the gap, without its end line",
            writer
                .path()
                .map_or("the transcript".into(), |p| p.display().to_string())
        );
    }
}

fn relay_stopped() -> EndRecord {
    EndRecord {
        t_us: 0,
        reason: "relay stopped".into(),
        bytes_from_client: 0,
        bytes_from_server: 0,
        messages: 0,
        unanswered: Vec::new(),
        user: None,
        compressed: None,
        lost_bytes: 0,
        counts: None,
    }
}
