//! Plain TCP on both legs, relayed by an epoll loop of our own instead of tokio's.
//!
//! A NOOP round trip through a relay is two hops, each a wake-up, a read and a send. In the
//! load benchmark's round trips (docs/performance.md, "Issue 14, fifth steps") a bare epoll
//! loop added about 4 µs less per round trip than socat, and the smallest tokio relay only
//! about 1 µs less: the rest is tokio's way from `epoll_wait` to the task. imapscope's own
//! pumps on tokio stayed 3-5 µs behind socat. So when neither leg speaks TLS and STARTTLS is
//! not intercepted, the connection task hands both sockets to one of these lanes (a thread per
//! core) and waits for the reason the session ended. Everything before and after (the
//! transcript file, the upstream connect, the end line, TLS, STARTTLS) stays in the task.
//!
//! Per chunk the loop does what a pump in `connection.rs` does, in the same order: read, write
//! to the other peer, let the recorder follow it, and acknowledge the server at once while it
//! may send more. Records go to the transcript thread without waiting. A session whose records
//! the disk has not taken yet is not read from until they are taken (back-pressure, bounded
//! memory); the transcript thread wakes the lane when it has room again. A bulk chunk is
//! followed by a look at the other sockets (`epoll_wait` without waiting) before the same
//! socket is read again, so one busy session does not starve the others.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::connection::{
    CLOSE_GRACE, Connection, GREETING_WAIT, PumpEnd, READ_MAX, READ_MIN, SHUT_DOWN,
};
use super::recorder::{Annotation, Record, RelayEvent};
use crate::protocol::Side;

/// The token of each lane's waker; a connection's sockets use `2 * slot` and `2 * slot + 1`.
const WAKER: Token = Token(usize::MAX);

/// How often a session held back by the disk is tried again, should a wake-up from the
/// transcript thread go missing (it is not expected to).
const RETRY: Duration = Duration::from_millis(20);

/// The lanes: started together, stopped together.
pub struct PlainLanes {
    lanes: Vec<LaneHandle>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct LaneHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    open: Arc<AtomicUsize>,
}

enum Command {
    Relay(Box<Handover>),
    /// imapscope is shutting down: end this session.
    Stop(u64),
    Quit,
}

/// What a connection task hands to a lane.
struct Handover {
    conn: Arc<Connection>,
    client: std::net::TcpStream,
    upstream: std::net::TcpStream,
    done: oneshot::Sender<String>,
    open: Arc<AtomicUsize>,
}

/// The connection task's hold on a session a lane relays.
pub struct Relaying {
    id: u64,
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    done: oneshot::Receiver<String>,
}

impl Relaying {
    /// Waits for the session to end and returns why; ends it first when `shutdown` fires.
    pub async fn ended(mut self, shutdown: &CancellationToken) -> String {
        tokio::select! {
            reason = &mut self.done => return reason.unwrap_or_else(|_| lane_gone()),
            _ = shutdown.cancelled() => {}
        }
        if self.commands.send(Command::Stop(self.id)).is_ok() {
            let _ = self.waker.wake();
        }
        self.done.await.unwrap_or_else(|_| lane_gone())
    }
}

fn lane_gone() -> String {
    "the relay thread stopped".into()
}

impl PlainLanes {
    /// `count` lanes (at least one), each a thread named `imapscope-plain-N`.
    pub fn start(count: usize) -> io::Result<PlainLanes> {
        let mut lanes = Vec::new();
        let mut threads = Vec::new();
        for n in 0..count.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (commands, inbox) = mpsc::channel();
            let lane = Lane::new(poll, inbox, waker.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("imapscope-plain-{n}"))
                    .spawn(move || lane.run())?,
            );
            lanes.push(LaneHandle {
                commands,
                waker,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(PlainLanes {
            lanes,
            threads: Mutex::new(threads),
        })
    }

    /// One lane per core the process may use.
    pub fn per_core() -> io::Result<PlainLanes> {
        PlainLanes::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Hands the session's two plain sockets (non-blocking) to the lane with the fewest open
    /// sessions. Gives them back if that lane's thread is gone.
    pub(super) fn relay(
        &self,
        conn: Arc<Connection>,
        client: std::net::TcpStream,
        upstream: std::net::TcpStream,
    ) -> Result<Relaying, (std::net::TcpStream, std::net::TcpStream)> {
        let Some(lane) = self
            .lanes
            .iter()
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
        else {
            return Err((client, upstream));
        };
        let id = conn.id();
        let (done, ended) = oneshot::channel();
        lane.open.fetch_add(1, Ordering::Relaxed);
        let handover = Handover {
            conn,
            client,
            upstream,
            done,
            open: lane.open.clone(),
        };
        if let Err(mpsc::SendError(Command::Relay(handover))) =
            lane.commands.send(Command::Relay(Box::new(handover)))
        {
            lane.open.fetch_sub(1, Ordering::Relaxed);
            return Err((handover.client, handover.upstream));
        }
        let _ = lane.waker.wake();
        Ok(Relaying {
            id,
            commands: lane.commands.clone(),
            waker: lane.waker.clone(),
            done: ended,
        })
    }

    /// Ends the lanes' threads (their sessions, if any are left, end as at shutdown) and waits
    /// for them.
    pub async fn stop(&self) {
        for lane in &self.lanes {
            if lane.commands.send(Command::Quit).is_ok() {
                let _ = lane.waker.wake();
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// One lane's thread: its poll, its sessions, what is due.
struct Lane {
    poll: Poll,
    /// Handed to the transcript thread, which wakes the lane when a held-back session has
    /// room again.
    waker: Arc<Waker>,
    inbox: mpsc::Receiver<Command>,
    slots: Vec<Option<Relayed>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    /// Sessions (slot, id) whose last read filled the buffer: read again after the next look
    /// at the other sockets.
    ready: VecDeque<(usize, u64)>,
    /// When a session has something due (the greeting wait, the close grace); stale entries
    /// are skipped.
    due: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Sessions with records the transcript thread had no room for.
    held_back: Vec<(usize, u64)>,
}

/// Where a call to [`Lane::advance`] comes from.
#[derive(Clone, Copy)]
enum Turn {
    Event,
    Ready,
    Retry,
}

enum Progress {
    Waiting,
    /// A read filled the buffer: there is likely more to read.
    More,
    Ended(String),
}

impl Lane {
    fn new(poll: Poll, inbox: mpsc::Receiver<Command>, waker: Arc<Waker>) -> Lane {
        Lane {
            poll,
            waker,
            inbox,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            ready: VecDeque::new(),
            due: BinaryHeap::new(),
            held_back: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("a relay thread cannot wait for its sockets: {e}");
                self.end_all(&format!("the relay thread failed: {e}"));
                return;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    if !self.take_commands() {
                        self.end_all(SHUT_DOWN);
                        return;
                    }
                    continue;
                }
                let slot = event.token().0 / 2;
                let closing = event.is_read_closed() || event.is_error();
                if event.is_readable() || closing {
                    // The socket of side `token % 2` has something to read (or an end or an
                    // error to tell, which a read returns).
                    if let Some(relayed) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                        let pump = &mut relayed.pumps[event.token().0 % 2];
                        pump.readable = true;
                        pump.closing |= closing;
                    }
                }
                self.advance(slot, None, Turn::Event);
            }
            // What was ready before this look at the sockets gets one more chunk each.
            for (slot, id) in std::mem::take(&mut self.ready) {
                self.advance(slot, Some(id), Turn::Ready);
            }
            for (slot, id) in std::mem::take(&mut self.held_back) {
                self.advance(slot, Some(id), Turn::Retry);
            }
            self.run_due();
        }
    }

    /// How long the next wait may last.
    fn timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let due = self
            .due
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()));
        if self.held_back.is_empty() {
            due
        } else {
            Some(due.map_or(RETRY, |d| d.min(RETRY)))
        }
    }

    /// Takes what the connection tasks sent; `false` on `Quit` (or when they all are gone).
    fn take_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Relay(handover)) => self.open(*handover),
                Ok(Command::Stop(id)) => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.end(slot, SHUT_DOWN.into());
                    }
                }
                Ok(Command::Quit) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn open(&mut self, handover: Handover) {
        let Handover {
            conn,
            client,
            upstream,
            done,
            open,
        } = handover;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let mut client = TcpStream::from_std(client);
        let mut upstream = TcpStream::from_std(upstream);
        let registry = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = registry
            .register(&mut client, Token(2 * slot), both)
            .and_then(|()| registry.register(&mut upstream, Token(2 * slot + 1), both));
        let id = conn.id();
        let waker = self.waker.clone();
        conn.on_room(Box::new(move || {
            let _ = waker.wake();
        }));
        let greeting_by = (!conn.spoke(Side::Server)).then(|| Instant::now() + GREETING_WAIT);
        let relayed = Relayed {
            id,
            conn,
            sockets: [client, upstream],
            pumps: [Pump::new(), Pump::new()],
            held: VecDeque::new(),
            greeting_by,
            grace_until: None,
            grace_queued: false,
            in_ready: false,
            in_retry: false,
            first_end: None,
            done: Some(done),
            open,
        };
        self.slots[slot] = Some(relayed);
        self.by_id.insert(id, slot);
        if let Err(e) = registered {
            self.end(slot, format!("cannot watch the sockets: {e}"));
            return;
        }
        if let Some(at) = greeting_by {
            self.due.push(Reverse((at, slot, id)));
        }
        // Bytes may have arrived before the sockets were registered; an edge-triggered poll
        // would not tell of them.
        self.advance(slot, Some(id), Turn::Event);
    }

    /// Lets the session in `slot` (if it is still `id`'s) move what it can. `turn` is the
    /// queue the call comes from, whose mark on the session is cleared first.
    fn advance(&mut self, slot: usize, id: Option<u64>, turn: Turn) {
        let Some(relayed) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if id.is_some_and(|id| id != relayed.id) {
            return;
        }
        match turn {
            Turn::Event => {}
            Turn::Ready => relayed.in_ready = false,
            Turn::Retry => relayed.in_retry = false,
        }
        let id = relayed.id;
        match relayed.advance() {
            Progress::Ended(reason) => return self.end(slot, reason),
            Progress::More if !relayed.in_ready => {
                relayed.in_ready = true;
                self.ready.push_back((slot, id));
            }
            Progress::More | Progress::Waiting => {}
        }
        if !relayed.held.is_empty() && !relayed.in_retry {
            relayed.in_retry = true;
            self.held_back.push((slot, id));
        }
        if let Some(at) = relayed.grace_until
            && !relayed.grace_queued
        {
            relayed.grace_queued = true;
            self.due.push(Reverse((at, slot, id)));
        }
    }

    fn run_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, slot, id))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(relayed) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if relayed.id != id {
                continue;
            }
            if let Some(reason) = relayed.on_time(now) {
                self.end(slot, reason);
            } else if let Some(at) = relayed.grace_until.filter(|&at| at > now) {
                // The open direction moved since: its grace runs from its last read.
                self.due.push(Reverse((at, slot, id)));
            }
        }
    }

    /// Ends the session in `slot`: its sockets close, its task learns why.
    fn end(&mut self, slot: usize, reason: String) {
        let Some(mut relayed) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.by_id.remove(&relayed.id);
        for socket in &mut relayed.sockets {
            let _ = self.poll.registry().deregister(socket);
        }
        relayed.send_held_now();
        let done = relayed.done.take();
        drop(relayed);
        if let Some(done) = done {
            let _ = done.send(reason);
        }
    }

    fn end_all(&mut self, reason: &str) {
        for slot in 0..self.slots.len() {
            self.end(slot, reason.to_string());
        }
    }
}

/// One direction: what `side` sends, going to its peer.
struct Pump {
    buf: BytesMut,
    size: usize,
    /// The socket may have bytes to read (an edge said so, and no read has drained it).
    readable: bool,
    /// The peer closed (or the socket failed): read on until a read says so, since no edge
    /// will come after the last bytes.
    closing: bool,
    /// Read and recorded, not yet taken by the peer's socket.
    unsent: Bytes,
    ended: bool,
}

impl Pump {
    fn new() -> Pump {
        Pump {
            buf: BytesMut::new(),
            size: READ_MIN,
            // Edge-triggered: whatever arrived before registration gets one read.
            readable: true,
            closing: false,
            unsent: Bytes::new(),
            ended: false,
        }
    }
}

/// One session on a lane.
struct Relayed {
    id: u64,
    conn: Arc<Connection>,
    /// The client's socket, then the upstream's (`Side as usize`).
    sockets: [TcpStream; 2],
    pumps: [Pump; 2],
    /// Records the transcript thread had no room for yet, in order.
    held: VecDeque<Record>,
    /// When to say that a plain upstream that has not greeted may be speaking TLS.
    greeting_by: Option<Instant>,
    /// Set when one side closed cleanly: how long the other may go on.
    grace_until: Option<Instant>,
    /// Marks that keep the session once in each of the lane's queues.
    grace_queued: bool,
    in_ready: bool,
    in_retry: bool,
    /// The clean end that started the grace.
    first_end: Option<PumpEnd>,
    done: Option<oneshot::Sender<String>>,
    open: Arc<AtomicUsize>,
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Relayed {
    /// Sends what was held, reads one chunk from each side that may have one; `Ended` when
    /// the session is over.
    fn advance(&mut self) -> Progress {
        self.send_held();
        let mut more = false;
        for side in [Side::Client, Side::Server] {
            let end = match self.flush(side) {
                Ok(()) => self.pump(side, &mut more),
                Err(end) => Some(end),
            };
            if let Some(end) = end
                && let Some(reason) = self.pump_ended(side, end)
            {
                return Progress::Ended(reason);
            }
        }
        if more {
            Progress::More
        } else {
            Progress::Waiting
        }
    }

    /// A direction ended; returns the session's end reason once the session is over, as
    /// `Connection::relay` decides it for tokio's pumps.
    fn pump_ended(&mut self, side: Side, end: PumpEnd) -> Option<String> {
        self.pumps[side as usize].ended = true;
        match self.first_end.take() {
            None if end.is_clean() => {
                self.first_end = Some(end);
                self.grace_until = Some(Instant::now() + CLOSE_GRACE);
                None
            }
            None => Some(end.describe()),
            Some(first) => Some(first.session_end(Some(&end))),
        }
    }

    /// The greeting wait or the close grace is over; `Some` ends the session.
    fn on_time(&mut self, now: Instant) -> Option<String> {
        if self.greeting_by.is_some_and(|at| at <= now) {
            self.greeting_by = None;
            if !self.conn.spoke(Side::Server) {
                let note = self.conn.silent_upstream();
                self.tell(note);
            }
        }
        if self.grace_until.is_some_and(|at| at <= now) {
            return self.first_end.take().map(|first| first.session_end(None));
        }
        None
    }

    /// Writes what `side` sent and the peer's socket had no room for.
    fn flush(&mut self, side: Side) -> Result<(), PumpEnd> {
        let pump = &mut self.pumps[side as usize];
        if pump.unsent.is_empty() {
            return Ok(());
        }
        let to = &self.sockets[side.peer() as usize];
        match write_what_fits(to, &pump.unsent) {
            Ok(n) => {
                let _ = pump.unsent.split_to(n);
                Ok(())
            }
            Err(e) => Err(PumpEnd::WriteError(side, e)),
        }
    }

    /// Reads one chunk from `side` if it may have one and nothing holds it back, forwards
    /// and records it. Sets `more` when the read filled the buffer.
    fn pump(&mut self, side: Side, more: &mut bool) -> Option<PumpEnd> {
        let s = side as usize;
        let pump = &mut self.pumps[s];
        if pump.ended || !pump.readable || !pump.unsent.is_empty() || !self.held.is_empty() {
            return None;
        }
        let size = pump.size;
        let n = match receive(&self.sockets[s], &mut pump.buf, size) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pump.readable = false;
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                *more = true;
                return None;
            }
            Err(e) => {
                let _ = self.sockets[side.peer() as usize].shutdown(Shutdown::Write);
                return Some(PumpEnd::ReadError(side, e));
            }
        };
        if n == 0 {
            return Some(self.closed(side));
        }
        if n >= size {
            pump.size = (size * 2).min(READ_MAX);
            *more = true;
        } else if pump.closing {
            *more = true;
        } else {
            // A read that did not fill the buffer drained the socket (as tokio assumes on
            // Linux); the next bytes bring a new edge.
            pump.readable = false;
            if n < size / 8 {
                pump.size = (size / 2).max(READ_MIN);
            }
        }
        let chunk = pump.buf.split().freeze();
        if self.grace_until.is_some() {
            // The direction still open is still sending: the grace is for a quiet one.
            self.grace_until = Some(Instant::now() + CLOSE_GRACE);
        }
        let t_us = self.conn.micros();
        if self.conn.first_bytes(side) {
            if side == Side::Server {
                self.greeting_by = None;
            }
            if let Some(message) = self.speaks_tls_unexpectedly(side, t_us, &chunk) {
                self.refuse(&message);
                return Some(PumpEnd::Refused(message));
            }
        }
        let written = write_what_fits(&self.sockets[side.peer() as usize], &chunk);
        // Recorded now whether the peer took all of it or not: the other direction may run
        // before the rest is written, and the answer to these bytes must not be recorded
        // before them. A failed write is recorded too: the sender did send those bytes.
        self.tell(RelayEvent::Bytes {
            side,
            t_us,
            data: chunk.clone(),
        });
        match written {
            Ok(n) => self.pumps[s].unsent = chunk.slice(n..),
            Err(e) => return Some(PumpEnd::WriteError(side, e)),
        }
        if side == Side::Server && self.conn.server_may_send_more() {
            // After the forward, and only while the server may have more to send (see
            // `Connection::pump`).
            super::stream::acknowledge_now(self.sockets[s].as_raw_fd());
        }
        None
    }

    /// `side` closed its socket.
    fn closed(&mut self, side: Side) -> PumpEnd {
        if side == Side::Server && !self.conn.spoke(Side::Server) {
            let message = self.conn.server_closed_before_greeting();
            self.error("upstream-greeting", &message);
            self.refuse(&message);
            return PumpEnd::Refused(message);
        }
        let _ = self.sockets[side.peer() as usize].shutdown(Shutdown::Write);
        PumpEnd::Eof(side)
    }

    /// As `Connection::speaks_tls_unexpectedly`.
    fn speaks_tls_unexpectedly(&mut self, side: Side, t_us: u64, first: &Bytes) -> Option<String> {
        let found = self.conn.unexpected_tls(side, t_us, first)?;
        for event in found.record {
            self.tell(event);
        }
        found.refusal
    }

    /// Tells the client why there will be no session (as `Connection::refuse`); best effort:
    /// the line is short and the client's socket fresh.
    fn refuse(&mut self, message: &str) {
        tracing::warn!("#{} {message}", self.id);
        let (bye, note) = self.conn.refusal(message);
        self.tell(RelayEvent::Said(Annotation::Note {
            t_us: self.conn.micros(),
            side: Some(Side::Client),
            text: note,
        }));
        let client = &self.sockets[Side::Client as usize];
        let _ = (&*client).write(bye.as_bytes());
        let _ = client.shutdown(Shutdown::Write);
    }

    fn error(&mut self, during: &str, message: &str) {
        let event = self.conn.error_event(during, message);
        self.tell(event);
    }

    /// The recorder follows `event`; what it made of it goes to the transcript thread a
    /// record at a time. While the thread has no room for this session, one record waits
    /// here and the rest waits in the recorder's queue, in order, and nothing more is read.
    fn tell(&mut self, event: RelayEvent) {
        self.conn.queue(event);
        self.hand_on();
    }

    /// Hands the recorder's records on until one finds no room (it is held) or none is left.
    fn hand_on(&mut self) {
        while self.held.is_empty() {
            let Some(record) = self.conn.next_record() else {
                return;
            };
            if let Some(record) = self.conn.offer(record) {
                self.held.push_back(record);
            }
        }
    }

    fn send_held(&mut self) {
        while let Some(record) = self.held.pop_front() {
            if let Some(record) = self.conn.offer(record) {
                self.held.push_front(record);
                return;
            }
        }
        self.hand_on();
    }

    /// At the end: what is held and queued goes now, past the limit (the end line follows).
    fn send_held_now(&mut self) {
        for record in self.held.drain(..) {
            self.conn.offer_now(record);
        }
        while let Some(record) = self.conn.next_record() {
            self.conn.offer_now(record);
        }
    }
}

/// Reads at most `size` bytes into `buf`'s spare room, without zeroing it first.
fn receive(socket: &TcpStream, buf: &mut BytesMut, size: usize) -> io::Result<usize> {
    buf.reserve(size);
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(size);
    // SAFETY: `recv` writes at most `room` bytes at the start of `spare`, memory `buf` owns
    // and has allocated; the socket's descriptor is open while `socket` lives.
    let n = unsafe { libc::recv(socket.as_raw_fd(), spare.as_mut_ptr().cast(), room, 0) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: `recv` initialized the `n <= room` bytes after the buffer's current length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes as much of `data` as the socket takes now; how much that was.
fn write_what_fits(mut to: &TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match to.write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
