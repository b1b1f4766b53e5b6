//! One thread that encodes and writes every recorded session's transcript.
//!
//! Each session's [`TranscriptWriter`] lives here, so every transcript byte still passes
//! through the one writer that redacts. The connection tasks only hand over what the tracker
//! made of each chunk ([`Record`]) and go on relaying: nothing on the relay's threads waits for
//! the disk, nor wakes a task per batch. Before, each session had a writer task that sent every
//! batch to tokio's blocking pool and waited for it: a recorded NOOP cost four task wake-ups
//! besides the relaying, and many recorded sessions of small commands ran at 0.6 of socat's
//! commands per second.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::{Semaphore, TryAcquireError, oneshot};

use super::recorder::{Annotation, Record};
use crate::transcript::TranscriptWriter;
use crate::transcript::format::EndRecord;

/// Records a session may have queued and not yet written before its relay waits (bounded
/// memory, back-pressure from a slow disk). A record is what the tracker made of one relayed
/// chunk, or of a piece of it: at most about 1 MiB of held message bytes (two parts of a large
/// literal, each up to 256 KiB long in a buffer up to twice that), or at most
/// [`EVENTS_PER_CALL`](crate::protocol::tracker::EVENTS_PER_CALL) events (see
/// [`super::recorder::Recorder`]), so a session holds at most about 16 MiB here.
pub const QUEUE_RECORDS: usize = 16;

/// Encoded bytes after which this thread writes out what it has even if more is queued.
const BATCH_BYTES: usize = 1 << 20;

enum Job {
    Open {
        session: u64,
        writer: Box<TranscriptWriter>,
        room: Arc<Room>,
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
        let room = Arc::new(Room::new());
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

/// How many more records a session may queue, and whom to wake when it may again (a plain
/// lane, which cannot wait on the semaphore).
pub struct Room {
    permits: Semaphore,
    /// Set by a `try_send` that found no room.
    waiting: AtomicBool,
    wake: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Room {
    fn new() -> Room {
        Room {
            permits: Semaphore::new(QUEUE_RECORDS),
            waiting: AtomicBool::new(false),
            wake: OnceLock::new(),
        }
    }

    /// Takes room for one record without waiting. Without room, the waiter (see
    /// [`TranscriptSink::on_room`]) is woken when there is some again.
    fn try_take(&self) -> Result<(), TryAcquireError> {
        let taken = match self.permits.try_acquire() {
            Err(TryAcquireError::NoPermits) => {
                // Asks to be woken first, then tries once more: room given back in between
                // is either taken now or wakes the waiter.
                self.waiting.store(true, Ordering::SeqCst);
                self.permits.try_acquire()
            }
            other => other,
        };
        taken.map(|permit| permit.forget())
    }

    fn give_back(&self, records: usize) {
        self.permits.add_permits(records);
        self.wake_waiter();
    }

    /// The session's writer failed: nothing more is recorded, and no relay waits for room.
    fn close(&self) {
        self.permits.close();
        self.wake_waiter();
    }

    fn wake_waiter(&self) {
        if self.waiting.swap(false, Ordering::SeqCst)
            && let Some(wake) = self.wake.get()
        {
            wake();
        }
    }
}

/// One session's way to the thread.
pub struct TranscriptSink {
    session: u64,
    jobs: mpsc::Sender<Job>,
    room: Arc<Room>,
    closed: bool,
}

impl TranscriptSink {
    /// Queues `record`; waits only while the session already has [`QUEUE_RECORDS`] unwritten.
    pub async fn send(&self, record: Record) {
        match self.room.permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return, // the session's writer failed: nothing more is recorded
        }
        let _ = self.jobs.send(Job::Record {
            session: self.session,
            record,
        });
    }

    /// Sets what to call when room comes back after a [`TranscriptSink::try_send`] found
    /// none (once; later calls are ignored).
    pub fn on_room(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.room.wake.set(wake);
    }

    /// Queues `record` if the session has room; gives it back if not (the plain lanes, which
    /// cannot wait, hold it and try again). A session whose writer failed records nothing more.
    pub fn try_send(&self, record: Record) -> Option<Record> {
        match self.room.try_take() {
            Ok(()) => {}
            Err(TryAcquireError::NoPermits) => return Some(record),
            Err(TryAcquireError::Closed) => return None,
        }
        let _ = self.jobs.send(Job::Record {
            session: self.session,
            record,
        });
        None
    }

    /// Queues `record` without waiting (for the end of a connection that panicked, and what a
    /// plain lane held at a session's end).
    pub fn send_now(&self, record: Record) {
        if let Ok(permit) = self.room.permits.try_acquire() {
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
    room: Arc<Room>,
    ended: bool,
    /// Records taken since the last write, given back to the session once written; the
    /// session is in the batch's `touched` list while this is not zero.
    taken: usize,
}

/// The sessions the thread holds. Should the thread ever die of a panic, dropping this lets
/// every session's relay go on unrecorded instead of waiting for room forever.
struct Sessions(HashMap<u64, Open>);

impl Drop for Sessions {
    fn drop(&mut self) {
        for open in self.0.values() {
            open.room.close();
        }
    }
}

fn run(queue: mpsc::Receiver<Job>) {
    let mut sessions = Sessions(HashMap::new());
    let mut touched: Vec<u64> = Vec::new();
    let mut closing: Vec<(u64, Option<oneshot::Sender<TranscriptWriter>>)> = Vec::new();
    while let Ok(job) = queue.recv() {
        let mut pending = take(job, &mut sessions.0, &mut touched, &mut closing);
        while pending < BATCH_BYTES {
            match queue.try_recv() {
                Ok(job) => pending += take(job, &mut sessions.0, &mut touched, &mut closing),
                Err(_) => break,
            }
        }
        write_out(&mut sessions.0, &mut touched);
        for (session, done) in closing.drain(..) {
            let Some(mut open) = sessions.0.remove(&session) else {
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
            // One thread serves every session: a bug that panics on one session's record
            // must not stop the others' recording, nor leave that session's relay waiting
            // for room that would never come back.
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle(session, open, record)
            }));
            if handled.is_err() {
                tracing::error!(
                    "#{session} the transcript writer failed on a record (a bug); this session is no longer recorded"
                );
                if let Some(broken) = sessions.remove(&session) {
                    // Its relay's next send sees the closed room and goes on unrecorded.
                    broken.room.close();
                }
                return 0;
            }
            if open.taken == 0 {
                touched.push(session);
            }
            open.taken += 1;
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
            open.room.give_back(std::mem::take(&mut open.taken));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{SessionTracker, Side};
    use crate::transcript::format::{Record as Line, SessionRecord};
    use crate::transcript::reader::parse_transcript;

    fn session_line(id: u64) -> SessionRecord {
        SessionRecord {
            version: crate::transcript::FORMAT_VERSION,
            imapscope: "test".into(),
            id,
            client: "127.0.0.1:1".into(),
            listen: "127.0.0.1:2".into(),
            upstream: "127.0.0.1:3".into(),
            start: "2026-11-27T00:00:00Z".into(),
            redaction: true,
        }
    }

    /// What the tracker makes of `bytes` from `side`, as the recorder would hand it over.
    fn events(tracker: &mut SessionTracker, side: Side, t_us: u64, bytes: &[u8]) -> Record {
        let mut out = Vec::new();
        tracker.on_bytes(side, t_us, bytes, &mut out);
        Record::Events(out)
    }

    fn lines(text: &[u8]) -> Vec<Line> {
        parse_transcript(text, "test").unwrap().records
    }

    #[tokio::test]
    async fn sessions_interleaved_on_the_thread_keep_their_own_order() {
        let thread = TranscriptThread::start().unwrap();
        let mut sinks = Vec::new();
        let mut trackers = Vec::new();
        for id in 1..=3 {
            let mut writer = TranscriptWriter::in_memory(true);
            writer.session(session_line(id));
            sinks.push(thread.open(id, writer).unwrap());
            trackers.push(SessionTracker::new());
        }
        // More records per session than it may have unwritten: the sends wait for the thread.
        for i in 0..(3 * QUEUE_RECORDS as u64) {
            for (k, sink) in sinks.iter().enumerate() {
                let line = format!("s{k}x{i} NOOP\r\n");
                let record = events(&mut trackers[k], Side::Client, i, line.as_bytes());
                sink.send(record).await;
            }
        }
        for (k, sink) in sinks.into_iter().enumerate() {
            let text = sink.close().await.unwrap().take_memory();
            let tags: Vec<String> = lines(&text)
                .into_iter()
                .filter_map(|l| match l {
                    Line::Message(m) => m.tag.map(String::from),
                    _ => None,
                })
                .collect();
            let wanted: Vec<String> = (0..(3 * QUEUE_RECORDS))
                .map(|i| format!("s{k}x{i}"))
                .collect();
            assert_eq!(tags, wanted, "session {k}");
        }
        thread.stop().await;
    }

    #[tokio::test]
    async fn a_sink_dropped_without_an_end_still_gets_one_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = TranscriptWriter::create(dir.path(), "t", true)
            .await
            .unwrap();
        writer.session(session_line(9));
        let thread = TranscriptThread::start().unwrap();
        let sink = thread.open(9, writer).unwrap();
        let mut tracker = SessionTracker::new();
        sink.send(events(&mut tracker, Side::Server, 1, b"* OK ready\r\n"))
            .await;
        drop(sink); // as a connection task that panicked
        thread.stop().await;
        let text = std::fs::read(dir.path().join("t.jsonl")).unwrap();
        let lines = lines(&text);
        assert!(matches!(lines.first(), Some(Line::Session(_))));
        assert!(lines.iter().any(|l| matches!(l, Line::Message(_))));
        let Some(Line::End(end)) = lines.last() else {
            panic!("no end line: {lines:?}");
        };
        assert_eq!(end.reason, "relay stopped");
    }

    #[test]
    fn a_session_without_room_is_woken_once_room_comes_back() {
        let room = Room::new();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = woken.clone();
        let _ = room.wake.set(Box::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
        }));
        for _ in 0..QUEUE_RECORDS {
            room.try_take().unwrap();
        }
        room.give_back(1);
        assert_eq!(woken.load(Ordering::SeqCst), 0, "nobody was waiting");
        room.try_take().unwrap();
        assert!(matches!(room.try_take(), Err(TryAcquireError::NoPermits)));
        room.give_back(2);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "the waiter is woken");
        room.give_back(1);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "and only once");
        room.try_take().unwrap();
        room.close();
        assert!(matches!(room.try_take(), Err(TryAcquireError::Closed)));
    }

    #[tokio::test]
    async fn nothing_is_opened_once_the_thread_is_stopped() {
        let thread = TranscriptThread::start().unwrap();
        thread.stop().await;
        assert!(thread.open(1, TranscriptWriter::in_memory(true)).is_none());
    }
}
