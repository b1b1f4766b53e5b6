//! Plays the client side of a recording against a live server and compares the answers.
//!
//! Each client unit is sent when the server has said what the recorded client had seen before
//! sending it: the tagged completions and continuation requests that preceded it (so pipelining
//! is kept, and literals wait for their `+`), and the untagged data the server pushed while no
//! command was in flight (NOTIFY's), up to the timeout, so that it arrives between the same
//! commands and is compared as unsolicited again. IDLE's DONE goes out after the recorded delay,
//! and not before the recorded pushes arrived (up to the timeout). The server's bytes go
//! through the same [`SessionTracker`] as a recording, which groups them by command; then
//! [`compare`] says whether the run matches.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::attribution::answered_command;
use super::matcher::{Comparison, Extras, Group, ShownDifferences, compare, show};
use super::sasl::SaslClient;
use super::script::{SaslStep, Script};
use crate::protocol::{Event, Kind, SessionTracker, Side, Status};
use crate::relay::stream::Stream;
use crate::tls::TlsMode;

/// How to reach the server and how strict to be.
#[derive(Clone)]
pub struct ReplayOptions {
    pub upstream: String,
    /// How to start the connection; `None`: as the recording did (implicit TLS when it was
    /// implicit; STARTTLS is a command of the recording and is played as one).
    pub tls: Option<TlsMode>,
    /// Needed when the connection or a STARTTLS in the recording uses TLS.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    pub extras: Extras,
    /// How long to wait for any one expected answer.
    pub timeout: Duration,
    /// Send each client message no sooner than its recorded time in its session, as well as
    /// after what it waited for: sessions run at once then meet each other's effects where
    /// they did (one connection moves a message into Trash, another finds it there later).
    pub paced: bool,
}

impl ReplayOptions {
    pub fn plain(upstream: &str) -> ReplayOptions {
        ReplayOptions {
            upstream: upstream.to_string(),
            tls: None,
            tls_config: None,
            extras: Extras::Forbid,
            timeout: Duration::from_secs(10),
            paced: false,
        }
    }
}

/// The outcome of replaying one transcript.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub name: String,
    pub commands: usize,
    pub comparison: Comparison,
    /// The run could not go on: no connection, a timeout, the server hung up early.
    pub error: Option<String>,
    /// The server could not be reached at all (no connection, no TLS handshake): nothing of
    /// the server's behaviour was compared.
    pub unreachable: bool,
    /// How many of the recorded commands were sent before the run ended.
    pub sent: usize,
    pub elapsed: Duration,
    /// Logged in as another user than the recording did: (this run's, the recording's).
    pub login_as: Option<(String, String)>,
}

impl ReplayReport {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.comparison.ok()
    }

    /// One line: `PASS name: 12 commands, 57 responses matched in 0.21 s`.
    pub fn summary(&self) -> String {
        let c = &self.comparison;
        format!(
            "{} {}: {} commands, {} responses matched, {} missing, {} unexpected, in {:.2} s{}",
            if self.ok() { "PASS" } else { "FAIL" },
            self.name,
            self.commands,
            c.matched,
            c.missing,
            c.extra,
            self.elapsed.as_secs_f64(),
            self.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ) + &self
            .login_as
            .as_ref()
            .map(|(now, then)| format!(" [logged in as {now}; the recording logged in as {then}]"))
            .unwrap_or_default()
    }

    /// The summary, then on failure the diff. After an error that ended the run, the
    /// commands never sent are counted, not listed response by response.
    pub fn render(&self, verbose: bool) -> String {
        self.render_folded(verbose, &mut ShownDifferences::default())
    }

    /// [`ReplayReport::render`] for one report of several: a difference shown for an earlier
    /// session already is named, not shown again (see [`Comparison::render_folded`]).
    pub fn render_folded(&self, verbose: bool, shown: &mut ShownDifferences) -> String {
        let mut s = self.summary();
        s.push('\n');
        if !self.ok() || verbose {
            let unsent = self.error.is_some().then_some(self.sent);
            s.push_str(
                &self
                    .comparison
                    .render_folded(verbose, unsent, shown, &self.name),
            );
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.comparison;
        json!({
            "transcript": self.name,
            "ok": self.ok(),
            "commands": self.commands,
            "sent": self.sent,
            "matched": c.matched,
            "missing": c.missing,
            "unexpected": c.extra,
            "error": self.error,
            "unreachable": self.unreachable,
            "seconds": self.elapsed.as_secs_f64(),
            "login_as": self.login_as.as_ref().map(|(now, then)| json!({"user": now, "recorded_user": then})),
            "differences": c.groups.iter().filter(|g| g.differs()).collect::<Vec<_>>(),
            // Commands the recording ended with unanswered: what came after was not compared.
            "cut_off": c.groups.iter().filter(|g| g.cut_off).filter_map(|g| g.command.as_deref()).collect::<Vec<_>>(),
            "bindings": c.bindings.pairs().into_iter()
                .map(|(var, of, recorded, received)| json!({"var": var, "of": of, "recorded": recorded, "received": received}))
                .collect::<Vec<_>>(),
        })
    }
}

/// A server message received in this run.
struct Received {
    bytes: Vec<u8>,
    kind: Kind,
    tag: Option<String>,
    status: Option<Status>,
    command: Option<String>,
    reply_to: Option<u64>,
    in_flight: Vec<u64>,
    at: Instant,
}

/// The sessions of one `--concurrent` replay, as far as each has come. A session sends a
/// message only once every other one has received the completions it had received before
/// that message's recorded time: pacing alone lets a slow answer on one connection (the
/// machine loaded) come after another connection's look at what it changed.
struct Progress {
    /// Per session, the completions received so far (`usize::MAX` once it has ended).
    done: Vec<std::sync::atomic::AtomicUsize>,
    changed: tokio::sync::Notify,
    /// Per session, the recorded times of its completions, from the first session's start.
    schedules: Vec<Vec<u64>>,
}

impl Progress {
    fn new(capture: &super::Capture) -> Progress {
        let schedules: Vec<Vec<u64>> = capture
            .scripts
            .iter()
            .zip(capture.offsets())
            .map(|(script, offset)| {
                let from = offset.as_micros() as u64;
                let mut times: Vec<u64> = script
                    .timeline
                    .iter()
                    .filter(|u| u.kind == Kind::Completion)
                    .map(|u| from + u.t_us)
                    .collect();
                times.sort_unstable();
                times
            })
            .collect();
        Progress {
            done: schedules
                .iter()
                .map(|_| std::sync::atomic::AtomicUsize::new(0))
                .collect(),
            changed: tokio::sync::Notify::new(),
            schedules,
        }
    }

    fn add(&self, session: usize, n: usize) {
        if let Some(done) = self.done.get(session) {
            let _ = done.fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |d| Some(d.saturating_add(n)),
            );
            self.changed.notify_waiters();
        }
    }

    fn ended(&self, session: usize) {
        if let Some(done) = self.done.get(session) {
            done.store(usize::MAX, std::sync::atomic::Ordering::Release);
            self.changed.notify_waiters();
        }
    }

    /// Whether every session but `me` has received what it had before `at` (recorded time,
    /// from the first session's start).
    fn caught_up(&self, me: usize, at: u64) -> bool {
        self.schedules.iter().enumerate().all(|(i, times)| {
            i == me
                || self.done[i].load(std::sync::atomic::Ordering::Acquire)
                    >= times.partition_point(|&t| t < at)
        })
    }
}

/// One session's place in a [`Progress`].
#[derive(Clone)]
struct Together {
    progress: Arc<Progress>,
    me: usize,
    /// This session's start, from the first session's.
    offset_us: u64,
}

/// The live side of a replay: the connection and what the tracker made of it.
struct Live {
    /// `None` only while being upgraded to TLS.
    stream: Option<Stream>,
    tracker: SessionTracker,
    events: Vec<Event>,
    received: Vec<Received>,
    /// The replay tracker's seq of each command sent, in order.
    command_seqs: Vec<u64>,
    closed: bool,
    start: Instant,
    buf: BytesMut,
    /// After COMPRESS: what is sent is deflated (the tracker inflates both ways itself).
    deflater: Option<crate::protocol::compress::Deflater>,
    /// In a `--concurrent` replay: the other sessions' progress, and this one's place.
    together: Option<Together>,
}

impl Live {
    fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn absorb(&mut self) {
        let completions = self
            .events
            .iter()
            .filter(|e| matches!(e, Event::Message(m) if m.from == Side::Server && m.kind == Kind::Completion))
            .count();
        if completions > 0
            && let Some(t) = &self.together
        {
            t.progress.add(t.me, completions);
        }
        for e in self.events.drain(..) {
            match e {
                Event::Message(m) if m.from == Side::Server => self.received.push(Received {
                    command: m.detail().command.as_deref().map(String::from),
                    bytes: m.bytes,
                    kind: m.kind,
                    tag: m.tag.map(Cow::into_owned),
                    status: m.status,
                    reply_to: m.reply_to,
                    in_flight: m.in_flight.to_vec(),
                    at: Instant::now(),
                }),
                Event::Message(m) if m.kind == Kind::Command => self.command_seqs.push(m.seq),
                Event::Part {
                    from: Side::Server,
                    bytes,
                    ..
                } => {
                    if let Some(last) = self.received.last_mut() {
                        last.bytes.extend_from_slice(&bytes);
                    }
                }
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let deflated;
        let bytes = match self.deflater.as_mut() {
            Some(d) => {
                deflated = d.deflate(bytes);
                &deflated[..]
            }
            None => bytes,
        };
        let stream = self.stream.as_mut().ok_or("no connection")?;
        // Flushed: over TLS, rustls may still hold records the socket had no room for.
        let written = match stream.write_all(bytes).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| format!("sending to the server failed: {e}"))?;
        let t = self.micros();
        self.tracker
            .on_bytes(Side::Client, t, bytes, &mut self.events);
        self.absorb();
        Ok(())
    }

    /// Reads until `done` holds, the deadline passes or the server closes.
    /// Reads what comes until `until` (a paced message's recorded time), so that this
    /// session's completions count for the others meanwhile.
    async fn read_until(&mut self, until: tokio::time::Instant) {
        while !self.closed && tokio::time::Instant::now() < until {
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(until, stream.read_buf(&mut self.buf)).await {
                Err(_) => return,
                // A failed read is said by the next wait, which finds the connection closed.
                Ok(Err(_)) => self.took(0),
                Ok(Ok(n)) => self.took(n),
            }
        }
    }

    /// In a `--concurrent` replay, waits until the other sessions have received what they
    /// had before `t_us` of this session's recording, reading this one's answers meanwhile.
    /// Gives up after `timeout` (another session may never get an answer it had): `false`.
    async fn wait_for_others(&mut self, t_us: u64, timeout: Duration) -> bool {
        let Some(together) = self.together.clone() else {
            return true;
        };
        let at = together.offset_us + t_us;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = together.progress.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if together.progress.caught_up(together.me, at) {
                return true;
            }
            let step = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                _ = &mut notified => {}
                _ = self.read_until(step) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }

    async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Live) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            if self.closed {
                return Err(format!(
                    "the server closed the connection while {what} was awaited"
                ));
            }
            self.buf.reserve(64 * 1024);
            let stream = self.stream.as_mut().ok_or("no connection")?;
            let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut self.buf)).await;
            match read {
                Err(_) => return Err(format!("no {what} within {timeout:?}")),
                Ok(Err(e)) => return Err(format!("reading from the server failed: {e}")),
                Ok(Ok(n)) => self.took(n),
            }
        }
    }

    /// What a read into `buf` gave, `n` bytes, through the tracker; 0: the server closed. A
    /// message the server closed inside (the middle of a literal) is handed out as far as it
    /// came, as a recording of this run would have it.
    fn took(&mut self, n: usize) {
        let t = self.micros();
        if n == 0 {
            self.closed = true;
            self.tracker.finish(t, &mut self.events);
        } else {
            let chunk = self.buf.split();
            self.tracker
                .on_bytes(Side::Server, t, &chunk, &mut self.events);
        }
        self.absorb();
    }

    fn completions(&self, tag: &str) -> usize {
        self.received
            .iter()
            .filter(|r| r.kind == Kind::Completion && r.tag.as_deref() == Some(tag))
            .count()
    }

    /// The completion received for `tag`, if one was.
    fn completion(&self, tag: &str) -> Option<&Received> {
        self.received
            .iter()
            .rev()
            .find(|r| r.kind == Kind::Completion && r.tag.as_deref() == Some(tag))
    }

    fn continuations(&self) -> usize {
        self.received
            .iter()
            .filter(|r| r.kind == Kind::ContinuationRequest)
            .count()
    }

    /// Untagged responses received while no command was in flight.
    fn unsolicited(&self) -> usize {
        self.received
            .iter()
            .filter(|r| r.kind == Kind::Untagged && r.in_flight.is_empty())
            .count()
    }
}

/// What must have been received before the client unit at `index` is sent.
struct Need {
    completions: HashMap<String, usize>,
    continuations: usize,
    /// Untagged responses that arrived while no command was in flight.
    unsolicited: usize,
}

fn need_before(script: &Script, index: usize) -> Need {
    let mut need = Need {
        completions: HashMap::new(),
        continuations: 0,
        unsolicited: 0,
    };
    for unit in &script.timeline[..index] {
        if unit.from != Side::Server {
            continue;
        }
        match unit.kind {
            Kind::Completion => {
                *need
                    .completions
                    .entry(unit.tag.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            Kind::ContinuationRequest => need.continuations += 1,
            Kind::Untagged if unit.in_flight.is_empty() => need.unsolicited += 1,
            _ => {}
        }
    }
    need
}

async fn connect(options: &ReplayOptions, mode: TlsMode) -> Result<Stream, String> {
    let tcp = tokio::time::timeout(options.timeout, TcpStream::connect(&options.upstream))
        .await
        .map_err(|_| {
            format!(
                "{} did not accept within {} s",
                options.upstream,
                options.timeout.as_secs()
            )
        })?
        .map_err(|e| format!("cannot connect to {}: {e}", options.upstream))?;
    let _ = tcp.set_nodelay(true);
    if mode != TlsMode::Tls {
        return Ok(Stream::Plain(tcp));
    }
    upgrade(tcp, options).await
}

async fn upgrade(tcp: TcpStream, options: &ReplayOptions) -> Result<Stream, String> {
    let config = options
        .tls_config
        .clone()
        .ok_or("the recording uses TLS, and no TLS configuration was given for the server")?;
    let host = crate::tls::host_of(&options.upstream).to_string();
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, crate::relay::read_ahead::ReadAhead::new(tcp))
        .await
        .map_err(|e| crate::tls::diagnose::upstream_failure(&e, &options.upstream))?;
    Ok(Stream::TlsToServer(Box::new(tls)))
}

/// Replays `script` against the server in `options` and compares.
pub async fn replay(script: &Script, options: &ReplayOptions) -> ReplayReport {
    replay_among(script, options, None).await
}

/// [`replay`], as one session of a `--concurrent` run when `together` says which.
async fn replay_among(
    script: &Script,
    options: &ReplayOptions,
    together: Option<Together>,
) -> ReplayReport {
    let report = replay_session(script, options, together.clone()).await;
    if let Some(t) = together {
        t.progress.ended(t.me);
    }
    report
}

async fn replay_session(
    script: &Script,
    options: &ReplayOptions,
    together: Option<Together>,
) -> ReplayReport {
    let start = Instant::now();
    let commands: BTreeMap<Group, String> = script
        .commands()
        .enumerate()
        .map(|(i, u)| (Group::Command(i), show(&u.shown)))
        .collect();
    let mut report = ReplayReport {
        name: script.name.clone(),
        commands: commands.len(),
        comparison: Comparison::default(),
        error: None,
        unreachable: false,
        sent: 0,
        elapsed: Duration::ZERO,
        login_as: script.login_as.clone().zip(script.user.clone()),
    };
    let stream = match connect(options, options.tls.unwrap_or(script.upstream_tls)).await {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            report.unreachable = true;
            report.elapsed = start.elapsed();
            return report;
        }
    };
    let mut live = Live {
        stream: Some(stream),
        tracker: SessionTracker::new(),
        events: Vec::new(),
        received: Vec::new(),
        command_seqs: Vec::new(),
        closed: false,
        start,
        buf: BytesMut::new(),
        deflater: None,
        together,
    };
    report.error = play(script, options, &mut live).await.err();
    report.sent = live.command_seqs.len();
    // Whatever came, compared with what was recorded.
    let recorded_index: HashMap<u64, usize> = script
        .commands()
        .enumerate()
        .map(|(i, u)| (u.seq, i))
        .collect();
    let live_index: HashMap<u64, usize> = live
        .command_seqs
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i))
        .collect();
    // The recorded commands in order (as recorded: the run's rebuilt logins name the same).
    let command_bytes: Vec<&[u8]> = script.commands().map(|u| &u.shown[..]).collect();
    let mut expected = Vec::new();
    let mut cut_short = BTreeSet::new();
    if let Some(g) = script
        .greeting
        .as_ref()
        .filter(|_| !script.synthesized_greeting)
    {
        expected.push((Group::Greeting, g.bytes.clone()));
    }
    for unit in script.timeline.iter().filter(|u| u.from == Side::Server) {
        if unit.cut_short {
            cut_short.insert(expected.len());
        }
        expected.push((
            group_of(
                &unit.bytes,
                unit.kind,
                unit.reply_to,
                &unit.in_flight,
                &recorded_index,
                &command_bytes,
            ),
            unit.bytes.clone(),
        ));
    }
    let received: Vec<(Group, Vec<u8>)> = live
        .received
        .iter()
        .filter(|r| !(script.synthesized_greeting && r.kind == Kind::Greeting))
        .map(|r| {
            (
                group_of(
                    &r.bytes,
                    r.kind,
                    r.reply_to,
                    &r.in_flight,
                    &live_index,
                    &command_bytes,
                ),
                r.bytes.clone(),
            )
        })
        .collect();
    report.comparison = compare(
        &commands,
        &cut_off(script, &recorded_index),
        &expected,
        &cut_short,
        &received,
        options.extras,
    );
    report.elapsed = start.elapsed();
    report
}

/// Replays every session of `capture`: one after the other in the order they started, or with
/// `concurrent`, all at once, each starting at its recorded offset from the first (as the
/// client opened them). Reports in capture order.
pub async fn replay_capture(
    capture: &super::Capture,
    options: &ReplayOptions,
    concurrent: bool,
) -> Vec<ReplayReport> {
    if !concurrent {
        let mut reports = Vec::new();
        for script in &capture.scripts {
            reports.push(replay(script, options).await);
        }
        return reports;
    }
    let mut runs = tokio::task::JoinSet::new();
    // Sessions run at once, each at its recorded pace: starting each at its offset alone would
    // let a session run ahead of what another does to the mailbox meanwhile.
    let options = ReplayOptions {
        paced: true,
        ..options.clone()
    };
    let progress = Arc::new(Progress::new(capture));
    for (i, (script, offset)) in capture.scripts.iter().zip(capture.offsets()).enumerate() {
        let (script, options) = (script.clone(), options.clone());
        let together = Together {
            progress: progress.clone(),
            me: i,
            offset_us: offset.as_micros() as u64,
        };
        runs.spawn(async move {
            tokio::time::sleep(offset).await;
            (i, replay_among(&script, &options, Some(together)).await)
        });
    }
    let mut reports: Vec<(usize, ReplayReport)> = runs.join_all().await;
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// The commands the recording stopped inside: no completion was recorded for them.
fn cut_off(script: &Script, index: &HashMap<u64, usize>) -> BTreeSet<Group> {
    unanswered(script)
        .filter_map(|u| index.get(&u.seq).map(|&i| Group::Command(i)))
        .collect()
}

/// The commands the recording has no completion for.
fn unanswered(script: &Script) -> impl Iterator<Item = &super::script::Unit> {
    let completed: BTreeSet<u64> = script
        .timeline
        .iter()
        .filter(|u| u.kind == Kind::Completion)
        .filter_map(|u| u.reply_to)
        .collect();
    script
        .commands()
        .filter(move |u| !completed.contains(&u.seq))
}

/// The command a server message answers: a completion's or continuation's own; for untagged
/// data with several commands in flight, the one its content names (a FETCH's message, a
/// LIST's mailbox, a CAPABILITY: see [`answered_command`]), else the newest.
fn group_of(
    bytes: &[u8],
    kind: Kind,
    reply_to: Option<u64>,
    in_flight: &[u64],
    index: &HashMap<u64, usize>,
    commands: &[&[u8]],
) -> Group {
    let by_seq = |seq: u64| index.get(&seq).copied();
    match kind {
        Kind::Greeting => Group::Greeting,
        Kind::Completion | Kind::ContinuationRequest => reply_to
            .and_then(by_seq)
            .map_or(Group::Unsolicited, Group::Command),
        _ => {
            let newest_first: Vec<usize> =
                in_flight.iter().rev().filter_map(|&s| by_seq(s)).collect();
            let named = (newest_first.len() > 1)
                .then(|| {
                    let candidates: Vec<(u64, &[u8])> = newest_first
                        .iter()
                        .filter_map(|&i| Some((i as u64, *commands.get(i)?)))
                        .collect();
                    answered_command(bytes, &candidates)
                })
                .flatten()
                .map(|i| i as usize);
            named
                .or(newest_first.first().copied())
                .map_or(Group::Unsolicited, Group::Command)
        }
    }
}

async fn play(script: &Script, options: &ReplayOptions, live: &mut Live) -> Result<(), String> {
    let plain = matches!(live.stream, Some(Stream::Plain(_)));
    live.wait("greeting", options.timeout, |l| !l.received.is_empty())
        .await
        .map_err(|e| match plain {
            // An IMAP server greets at once; a TLS one waits for the client's hello.
            true => format!(
                "{e}: if {} speaks implicit TLS (as port 993 does), replay with --upstream-tls tls",
                options.upstream
            ),
            false => e,
        })?;
    // The SASL exchanges being rebuilt, by their AUTHENTICATE's recorded seq.
    let mut sasl: HashMap<u64, SaslClient> = HashMap::new();
    // How many of the recorded unsolicited responses have been waited for.
    let mut unsolicited = 0;
    // A login the recording had accepted, sent, its answer not yet looked at.
    let mut login: Option<&str> = None;
    // Commands the recorded client sent in one write, gathered to be sent in one again: a
    // server may answer `UID STORE ... EXPUNGE` sent together otherwise than the same two a
    // millisecond apart (Dovecot with QRESYNC adds a FETCH between them).
    let mut batch: Vec<u8> = Vec::new();
    // Another session never caught up once: not waited for again.
    let mut waited_in_vain = false;
    for (index, unit) in script.timeline.iter().enumerate() {
        if unit.from != Side::Client {
            continue;
        }
        let need = need_before(script, index);
        let what = match unit.kind {
            Kind::SaslData => "continuation request before the SASL response",
            _ if unit.is_part => "continuation request before the literal",
            _ => "answer the recorded client had before sending this",
        };
        let shown = show(&unit.shown);
        live.wait(&format!("{what} ({shown})"), options.timeout, |l| {
            l.continuations() >= need.continuations
                && need
                    .completions
                    .iter()
                    .all(|(tag, n)| l.completions(tag) >= *n)
        })
        .await?;
        if let Some(tag) = login
            && let Some(refusal) = live.completion(tag)
        {
            login = None;
            if refusal.status != Some(Status::Ok) {
                // Every later command would be refused for want of a login: say so once.
                return Err(format!(
                    "the server refused the login, which the recording had accepted ({}): \
                     check --login or IMAPSCOPE_LOGIN",
                    show(&refusal.bytes)
                ));
            }
        }
        // Untagged data pushed while no command was in flight (NOTIFY, a delivery between
        // commands) was seen before this unit too. Sent now, this unit would be in flight when
        // the push arrives, and the push would be compared as part of its answer: missing
        // where it was recorded, unexpected here. One that never comes is the comparison's to
        // report, and is waited for once.
        if need.unsolicited > unsolicited {
            unsolicited = need.unsolicited;
            let _ = live
                .wait(
                    &format!("{unsolicited} untagged response(s) sent between commands"),
                    options.timeout,
                    |l| l.unsolicited() >= unsolicited,
                )
                .await;
        }
        if unit.kind == Kind::IdleDone {
            idle_wait(script, index, options, live).await?;
        }
        if options.paced {
            let due = live.start + Duration::from_micros(unit.t_us);
            live.read_until(tokio::time::Instant::from_std(due)).await;
            if !waited_in_vain && !live.wait_for_others(unit.t_us, options.timeout).await {
                // Another session lacks an answer it had: order is best effort from here.
                waited_in_vain = true;
            }
        }
        let bytes = match &unit.sasl {
            Some(step) => sasl_bytes(unit, step, live, &mut sasl)?,
            None => with_new_uidvalidities(script, index, live, &unit.bytes),
        };
        if sent_with_the_next(script, index) {
            batch.extend_from_slice(&bytes);
            continue;
        }
        let bytes = if batch.is_empty() {
            bytes
        } else {
            batch.extend_from_slice(&bytes);
            std::mem::take(&mut batch)
        };
        live.send(&bytes).await?;
        if unit.kind == Kind::Command
            && matches!(unit.name.as_deref(), Some("LOGIN" | "AUTHENTICATE"))
            && script.accepted(unit.seq)
        {
            login = unit.tag.as_deref();
        }
        if unit.kind == Kind::Command && unit.name.as_deref() == Some("STARTTLS") {
            starttls(unit, options, live).await?;
        }
        if unit.kind == Kind::Command && unit.name.as_deref() == Some("COMPRESS") {
            // Negotiated as the recording did: on OK, both ways are DEFLATE from here on.
            if accepted(unit, "COMPRESS", options, live).await? {
                live.deflater = Some(crate::protocol::compress::Deflater::new());
            }
        }
    }
    // Every recorded completion and continuation request, then what the server pushed after
    // the last of them (IDLE when the client quit), then the close if the server closed.
    let need = need_before(script, script.timeline.len());
    live.wait("remaining completions", options.timeout, |l| {
        l.continuations() >= need.continuations
            && need
                .completions
                .iter()
                .all(|(tag, n)| l.completions(tag) >= *n)
    })
    .await?;
    let last_answer = script
        .timeline
        .iter()
        .rposition(|u| matches!(u.kind, Kind::Completion | Kind::ContinuationRequest));
    let pushes = script.timeline[last_answer.map_or(0, |i| i + 1)..]
        .iter()
        // A message the recording ends inside is no push: pipelined commands may be answered
        // in another order, and it is waited for below whatever came after it.
        .filter(|u| u.from == Side::Server && u.kind == Kind::Untagged && !u.cut_short)
        .count();
    if pushes > 0 {
        let since = live
            .received
            .iter()
            .rposition(|r| matches!(r.kind, Kind::Completion | Kind::ContinuationRequest))
            .map_or(0, |i| i + 1);
        // A push that never comes is reported by the comparison, not as an error.
        let _ = live
            .wait(
                &format!("{pushes} untagged response(s) after the last answer"),
                options.timeout,
                |l| {
                    l.received[since.min(l.received.len())..]
                        .iter()
                        .filter(|r| r.kind == Kind::Untagged)
                        .count()
                        >= pushes
                },
            )
            .await;
    }
    // The recording ends inside a message (the client was killed in the middle of a large
    // FETCH): as much of it as was recorded, or its command's end, before the comparison.
    let last_server = script
        .timeline
        .iter()
        .rev()
        .find(|u| u.from == Side::Server);
    if let Some(short) = last_server.filter(|u| u.cut_short) {
        let want = short.bytes.len();
        // As many messages at least that long as the recording has (the one cut short among
        // them), or the end of the command it answered, whichever comes first.
        let long = |len: usize| len >= want;
        let recorded = script
            .timeline
            .iter()
            .filter(|u| u.from == Side::Server && u.kind == short.kind && long(u.bytes.len()))
            .count();
        let unanswered: Vec<&str> = unanswered(script)
            .filter_map(|u| u.tag.as_deref())
            .collect();
        // Like a push, a rest that never comes is the comparison's to report.
        let _ = live
            .wait(
                "the rest of the message the recording ends inside",
                options.timeout,
                |l| {
                    let answered =
                        !unanswered.is_empty() && unanswered.iter().all(|t| l.completions(t) > 0);
                    answered
                        || l.received
                            .iter()
                            .filter(|r| r.kind == short.kind && long(r.bytes.len()))
                            .count()
                            >= recorded
                },
            )
            .await;
    }
    if script.server_hung_up() {
        let _ = live.wait("close", options.timeout, |l| l.closed).await;
    }
    Ok(())
}

/// Whether the recorded client sent the command at `index` in one write with the client unit
/// after it: the next unit is a command read at the same instant, nothing came from the
/// server between them, and neither changes how the connection goes on (STARTTLS, COMPRESS,
/// a login, IDLE), which the replay handles once each is answered.
fn sent_with_the_next(script: &Script, index: usize) -> bool {
    let simple = |u: &super::script::Unit| {
        u.from == Side::Client
            && u.kind == Kind::Command
            && !u.is_part
            && u.sasl.is_none()
            && !matches!(
                u.name.as_deref(),
                Some("STARTTLS" | "COMPRESS" | "LOGIN" | "AUTHENTICATE" | "IDLE")
            )
    };
    let (Some(unit), Some(next)) = (script.timeline.get(index), script.timeline.get(index + 1))
    else {
        return false;
    };
    simple(unit) && simple(next) && next.t_us == unit.t_us
}

/// The bytes of a unit of a SASL exchange the recording hid: the AUTHENTICATE command (with
/// its initial response when the recording had one), or the response to the challenge the
/// server sent in this run.
fn sasl_bytes(
    unit: &super::script::Unit,
    step: &SaslStep,
    live: &Live,
    clients: &mut HashMap<u64, SaslClient>,
) -> Result<Vec<u8>, String> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    if unit.kind == Kind::Command {
        let mut client = SaslClient::with_random_nonce(step.mechanism, step.login.clone());
        let line = authenticate_line(unit, step, &mut client);
        clients.insert(unit.seq, client);
        return Ok(line);
    }
    let auth = unit.reply_to.unwrap_or_default();
    let client = clients
        .get_mut(&auth)
        .ok_or("a SASL response without its AUTHENTICATE")?;
    // The challenge: the last continuation request this server sent, base64 after "+ ".
    let challenge = live
        .received
        .iter()
        .rev()
        .find(|r| r.kind == Kind::ContinuationRequest)
        .map(|r| {
            let text = r.bytes.strip_prefix(b"+").unwrap_or(&r.bytes).trim_ascii();
            base64::Engine::decode(b64, text).unwrap_or_default()
        })
        .unwrap_or_default();
    let response = client.respond(&challenge);
    Ok(format!("{}\r\n", base64::Engine::encode(b64, response)).into_bytes())
}

/// The AUTHENTICATE command rebuilt: tag, mechanism and the initial response as the
/// recording had them, with this run's credentials, and what the recorded line had after its
/// hidden initial response (` extra`, which the server may have refused it for).
fn authenticate_line(
    unit: &super::script::Unit,
    step: &SaslStep,
    client: &mut SaslClient,
) -> Vec<u8> {
    use crate::protocol::redact::PLACEHOLDER;
    let tag = unit.tag.clone().unwrap_or_default();
    let verb = super::script::command_word(&unit.bytes).unwrap_or_else(|| "AUTHENTICATE".into());
    let mut line = format!("{tag} {verb} {}", step.spelled).into_bytes();
    // An empty initial response (`=`) hides nothing and is sent as recorded: the response
    // then follows the server's `+`, as it did.
    let recorded_head = crate::protocol::message::parse_command(&unit.bytes);
    let empty_ir = recorded_head
        .args()
        .get(1)
        .is_some_and(|t| &unit.bytes[t.span.clone()] == b"=");
    if empty_ir && !step.initial_response {
        line.extend_from_slice(b" =");
    }
    if step.initial_response {
        let ir = client.initial_response_as_recorded();
        line.push(b' ');
        if ir.is_empty() {
            line.push(b'=');
        } else {
            let b64 = &base64::engine::general_purpose::STANDARD;
            line.extend_from_slice(base64::Engine::encode(b64, ir).as_bytes());
        }
    }
    let first_line = unit.bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
    if step.initial_response
        && let Some(at) = first_line
            .windows(PLACEHOLDER.len())
            .position(|w| w == PLACEHOLDER)
    {
        line.extend_from_slice(&first_line[at + PLACEHOLDER.len()..]);
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// The client unit with the UIDVALIDITY values the recorded server had announced replaced by
/// the ones this server announced, matched in order of appearance.
fn with_new_uidvalidities(script: &Script, index: usize, live: &Live, bytes: &[u8]) -> Vec<u8> {
    use super::canon::{replace_number, uidvalidities};
    let recorded = script.timeline[..index]
        .iter()
        .filter(|u| u.from == Side::Server)
        .flat_map(|u| uidvalidities(&u.bytes));
    let received = live.received.iter().flat_map(|r| uidvalidities(&r.bytes));
    let mut out = bytes.to_vec();
    let mut done: Vec<Vec<u8>> = Vec::new();
    for (old, new) in recorded.zip(received) {
        if old != new && !done.contains(&old) {
            out = replace_number(&out, &old, &new);
            done.push(old);
        }
    }
    out
}

/// DONE goes out after the recorded delay since the IDLE continuation, and once the pushes
/// recorded before it arrived (they may depend on something outside the session, such as a
/// delivery, so they are waited for up to the timeout).
async fn idle_wait(
    script: &Script,
    index: usize,
    options: &ReplayOptions,
    live: &mut Live,
) -> Result<(), String> {
    let Some(cont_index) = script.timeline[..index]
        .iter()
        .rposition(|u| u.kind == Kind::ContinuationRequest)
    else {
        return Ok(());
    };
    let recorded_delay = Duration::from_micros(
        script.timeline[index]
            .t_us
            .saturating_sub(script.timeline[cont_index].t_us),
    );
    let pushes = script.timeline[cont_index + 1..index]
        .iter()
        .filter(|u| u.from == Side::Server && u.kind == Kind::Untagged)
        .count();
    let since = live
        .received
        .iter()
        .rposition(|r| r.kind == Kind::ContinuationRequest)
        .unwrap_or(0);
    live.wait(
        &format!("{pushes} untagged response(s) pushed during IDLE"),
        options.timeout.max(recorded_delay),
        |l| {
            l.received[since + 1..]
                .iter()
                .filter(|r| r.kind == Kind::Untagged)
                .count()
                >= pushes
        },
    )
    .await
    .map_err(|e| {
        // What made the server push (a delivery, another connection's APPEND or STORE)
        // happened outside this connection.
        format!(
            "{e}: if another connection of the capture caused the push, replay the sessions \
             together with --concurrent; else the delivery has to happen during the replay"
        )
    })?;
    let continued_at = live.received[since].at;
    let remaining = recorded_delay.saturating_sub(continued_at.elapsed());
    if !remaining.is_zero() {
        // Keep reading while waiting, so pushes are recorded with their time.
        let _ = live
            .wait("the recorded IDLE delay", remaining, |_| false)
            .await;
    }
    Ok(())
}

/// Waits for the completion of the command just sent; whether it was OK.
async fn accepted(
    unit: &super::script::Unit,
    name: &str,
    options: &ReplayOptions,
    live: &mut Live,
) -> Result<bool, String> {
    let tag = unit.tag.clone().unwrap_or_default();
    let before = live.completions(&tag);
    live.wait(&format!("the answer to {name}"), options.timeout, |l| {
        l.completions(&tag) > before
    })
    .await?;
    Ok(live
        .received
        .iter()
        .rev()
        .find(|r| r.kind == Kind::Completion && r.tag.as_deref() == Some(tag.as_str()))
        .is_some_and(|r| r.status == Some(Status::Ok) && r.command.as_deref() == Some(name)))
}

/// After a STARTTLS command: on the server's OK, continue over TLS.
async fn starttls(
    unit: &super::script::Unit,
    options: &ReplayOptions,
    live: &mut Live,
) -> Result<(), String> {
    if !accepted(unit, "STARTTLS", options, live).await? {
        return Ok(());
    }
    let Some(Stream::Plain(tcp)) = live.stream.take() else {
        return Err("STARTTLS on a connection that is not plain TCP".into());
    };
    live.stream = Some(upgrade(tcp, options).await?);
    live.tracker.tls_established();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::reader::parse_transcript;
    use tokio::net::TcpListener;

    const GREETING: &str = r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* OK ready\r\n"}"#;

    /// A script from transcript lines, after a session line.
    fn script(lines: &[&str]) -> Script {
        let mut text = r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#.to_string();
        for line in lines {
            text.push('\n');
            text.push_str(line);
        }
        let transcript = parse_transcript(text.as_bytes(), "t").unwrap();
        Script::from_transcript("t", &transcript).unwrap()
    }

    /// A recorded AUTHENTICATE with something after its initial response is rebuilt with it:
    /// the server refused the recorded one for it, and must be given the same line.
    #[test]
    fn an_authenticate_is_rebuilt_with_what_followed_its_initial_response() {
        let rebuilt = |text: &str| {
            let command = format!(
                r#"{{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"a1","name":"AUTHENTICATE","text":"{text}\r\n","redacted":["sasl-ir"]}}"#
            );
            let login = crate::replay::Login::parse("nell:pw").unwrap();
            let s = script(&[GREETING, &command]).with_login(&[login]).unwrap();
            let unit = s.commands().next().unwrap().clone();
            let step = unit.sasl.clone().unwrap();
            let mut client = SaslClient::with_random_nonce(step.mechanism, step.login.clone());
            String::from_utf8(authenticate_line(&unit, &step, &mut client)).unwrap()
        };
        assert_eq!(
            rebuilt("a1 AUTHENTICATE PLAIN <redacted> extra"),
            "a1 AUTHENTICATE PLAIN AG5lbGwAcHc= extra\r\n"
        );
        assert_eq!(
            rebuilt("a1 authenticate plain <redacted>"),
            "a1 authenticate plain AG5lbGwAcHc=\r\n"
        );
        // An empty initial response is sent as recorded; the credentials follow the `+`.
        let command = r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"a1","name":"AUTHENTICATE","text":"a1 AUTHENTICATE PLAIN =\r\n"}"#;
        let response = r#"{"type":"message","seq":4,"t_us":3,"from":"client","kind":"sasl-data","reply_to":2,"redacted":["sasl-data"],"text":"<redacted>\r\n"}"#;
        let plus = r#"{"type":"message","seq":3,"t_us":2,"from":"server","kind":"continuation-request","reply_to":2,"text":"+ \r\n"}"#;
        let s = script(&[GREETING, command, plus, response])
            .with_login(&[crate::replay::Login::parse("nell:pw").unwrap()])
            .unwrap();
        let unit = s.commands().next().unwrap().clone();
        let step = unit.sasl.clone().unwrap();
        let mut client = SaslClient::with_random_nonce(step.mechanism, step.login.clone());
        assert_eq!(
            String::from_utf8(authenticate_line(&unit, &step, &mut client)).unwrap(),
            "a1 AUTHENTICATE PLAIN =\r\n"
        );
    }

    /// In a concurrent replay a session waits for the completions the others had received
    /// before its message's recorded time, counted from the first session's start.
    #[test]
    fn a_session_waits_for_what_the_others_had_received_before() {
        let dir = tempfile::tempdir().unwrap();
        let session = |start: &str, completion_at: u64| {
            format!(
                r#"{{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"{start}","redaction":true}}
{{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* OK ready\r\n"}}
{{"type":"message","seq":2,"t_us":10,"from":"client","kind":"command","tag":"a","name":"NOOP","text":"a NOOP\r\n"}}
{{"type":"message","seq":3,"t_us":{completion_at},"from":"server","kind":"completion","tag":"a","name":"OK","status":"OK","reply_to":2,"text":"a OK\r\n"}}
"#
            )
        };
        std::fs::write(
            dir.path().join("a.jsonl"),
            session("2026-11-27T10:00:00.000000Z", 1000),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.jsonl"),
            session("2026-11-27T10:00:00.000500Z", 3000),
        )
        .unwrap();
        let capture = super::super::Capture::load(&[dir.path().to_path_buf()]).unwrap();
        let progress = Progress::new(&capture);
        // b at 2000 µs of its own (2500 from a's start): a's completion (1000) came before.
        assert!(!progress.caught_up(1, 2500));
        assert!(progress.caught_up(1, 900));
        progress.add(0, 1);
        assert!(progress.caught_up(1, 2500));
        // a at 3000 (b's completion at 3500 not yet due); at 4000 it is.
        assert!(progress.caught_up(0, 3000));
        assert!(!progress.caught_up(0, 4000));
        progress.ended(1);
        assert!(progress.caught_up(0, 4000));
    }

    /// What a scripted server does, in turn.
    enum Step {
        Say(&'static [u8]),
        /// Reads one line the replayer sent.
        Hear,
        Pause(Duration),
    }

    /// Replays `script` against a server on an ephemeral port that plays `steps` to one
    /// connection and then closes it.
    async fn run(script: &Script, steps: Vec<Step>) -> ReplayReport {
        run_with(script, steps, false).await
    }

    /// [`run`], sending at the recorded pace when `paced`.
    async fn run_with(script: &Script, steps: Vec<Step>, paced: bool) -> ReplayReport {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            for step in steps {
                match step {
                    Step::Say(bytes) => {
                        let _ = tcp.write_all(bytes).await;
                    }
                    Step::Hear => {
                        let mut line = Vec::new();
                        let mut byte = [0u8; 1];
                        while !line.ends_with(b"\r\n") {
                            match tcp.read(&mut byte).await {
                                Ok(1) => line.push(byte[0]),
                                _ => break,
                            }
                        }
                    }
                    Step::Pause(d) => tokio::time::sleep(d).await,
                }
            }
        });
        let mut options = ReplayOptions::plain(&addr);
        options.timeout = Duration::from_secs(5);
        options.paced = paced;
        replay(script, &options).await
    }

    /// Paced (`--concurrent`), a command goes out no sooner than it did in the recording,
    /// though its answer came long before: another connection may have to act first.
    #[tokio::test]
    async fn a_paced_replay_sends_each_command_at_its_recorded_time() {
        let script = script(&[
            GREETING,
            r#"{"type":"message","seq":2,"t_us":10,"from":"client","kind":"command","tag":"a1","name":"NOOP","text":"a1 NOOP\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":20,"from":"server","kind":"completion","tag":"a1","name":"OK","status":"OK","reply_to":2,"text":"a1 OK\r\n"}"#,
            r#"{"type":"message","seq":4,"t_us":600000,"from":"client","kind":"command","tag":"a2","name":"SELECT","text":"a2 SELECT Trash\r\n"}"#,
            r#"{"type":"message","seq":5,"t_us":600100,"from":"server","kind":"completion","tag":"a2","name":"OK","status":"OK","reply_to":4,"text":"a2 OK\r\n"}"#,
        ]);
        let steps = || {
            vec![
                Step::Say(b"* OK ready\r\n"),
                Step::Hear,
                Step::Say(b"a1 OK\r\n"),
                Step::Hear,
                Step::Say(b"a2 OK\r\n"),
            ]
        };
        let paced = run_with(&script, steps(), true).await;
        assert!(paced.ok(), "{}", paced.render(true));
        assert!(
            paced.elapsed >= Duration::from_millis(600),
            "{:?}",
            paced.elapsed
        );
        let at_once = run(&script, steps()).await;
        assert!(at_once.ok(), "{}", at_once.render(true));
        assert!(
            at_once.elapsed < Duration::from_millis(500),
            "{:?}",
            at_once.elapsed
        );
    }

    #[tokio::test]
    async fn untagged_data_pushed_between_commands_is_awaited_and_matched_as_such() {
        // NOTIFY: the server pushes a new message's EXISTS while no command is in flight.
        let script = script(&[
            GREETING,
            r#"{"type":"message","seq":2,"t_us":10,"from":"client","kind":"command","tag":"a1","name":"NOTIFY","text":"a1 NOTIFY SET (selected (MessageNew))\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":20,"from":"server","kind":"completion","tag":"a1","name":"OK","status":"OK","reply_to":2,"text":"a1 OK\r\n"}"#,
            r#"{"type":"message","seq":4,"t_us":300000,"from":"server","kind":"untagged","tag":"*","name":"EXISTS","text":"* 5 EXISTS\r\n"}"#,
            r#"{"type":"message","seq":5,"t_us":1300000,"from":"client","kind":"command","tag":"a2","name":"NOOP","text":"a2 NOOP\r\n"}"#,
            r#"{"type":"message","seq":6,"t_us":1300100,"from":"server","kind":"completion","tag":"a2","name":"OK","status":"OK","reply_to":5,"text":"a2 OK\r\n"}"#,
        ]);
        // The same server: the push comes a while after a1's completion. Sent at once, a2
        // would be in flight when it arrives.
        let report = run(
            &script,
            vec![
                Step::Say(b"* OK ready\r\n"),
                Step::Hear,
                Step::Say(b"a1 OK\r\n"),
                Step::Pause(Duration::from_millis(100)),
                Step::Say(b"* 5 EXISTS\r\n"),
                Step::Hear,
                Step::Say(b"a2 OK\r\n"),
            ],
        )
        .await;
        assert!(report.ok(), "{}", report.render(true));
        let c = &report.comparison;
        assert_eq!((c.matched, c.missing, c.extra), (4, 0, 0));
        let pushed = c.groups.iter().find(|g| g.group == Group::Unsolicited);
        assert!(pushed.is_some_and(|g| g.lines.len() == 1), "{:?}", c.groups);
    }

    #[tokio::test]
    async fn a_server_that_closes_inside_a_literal_as_recorded_matches_the_recording() {
        // The recorded server closed in the middle of a FETCH's literal.
        let script = script(&[
            GREETING,
            r#"{"type":"message","seq":2,"t_us":10,"from":"client","kind":"command","tag":"a1","name":"FETCH","text":"a1 FETCH 1 BODY[]\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":20,"from":"server","kind":"untagged","tag":"*","name":"FETCH","partial":true,"in_flight":[2],"text":"* 1 FETCH (BODY[] {100}\r\nFrom: x\r\n"}"#,
            r#"{"type":"note","t_us":30,"seq":3,"from":"server","note":"connection closed before this message was complete"}"#,
            r#"{"type":"end","t_us":30,"reason":"server closed","bytes_from_client":19,"bytes_from_server":46,"messages":3,"unanswered":[2]}"#,
        ]);
        let same = run(
            &script,
            vec![
                Step::Say(b"* OK ready\r\n"),
                Step::Hear,
                Step::Say(b"* 1 FETCH (BODY[] {100}\r\nFrom: x\r\n"),
            ],
        )
        .await;
        assert!(same.ok(), "{}", same.render(true));
        let c = &same.comparison;
        assert_eq!((c.matched, c.missing, c.extra), (2, 0, 0));
        // A server that closes sooner still differs.
        let sooner = run(
            &script,
            vec![
                Step::Say(b"* OK ready\r\n"),
                Step::Hear,
                Step::Say(b"* 1 FETCH (BODY[] {100}\r\nFr"),
            ],
        )
        .await;
        assert_eq!(sooner.comparison.missing, 1, "{}", sooner.render(true));
    }

    #[tokio::test]
    async fn a_refused_login_stops_the_run_and_says_so_once() {
        let script = script(&[
            GREETING,
            r#"{"type":"message","seq":2,"t_us":10,"from":"client","kind":"command","tag":"a1","name":"LOGIN","text":"a1 LOGIN nell pw\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":20,"from":"server","kind":"completion","tag":"a1","name":"OK","status":"OK","reply_to":2,"text":"a1 OK Logged in\r\n"}"#,
            r#"{"type":"message","seq":4,"t_us":30,"from":"client","kind":"command","tag":"a2","name":"SELECT","text":"a2 SELECT INBOX\r\n"}"#,
            r#"{"type":"message","seq":5,"t_us":40,"from":"server","kind":"untagged","tag":"*","name":"EXISTS","in_flight":[4],"text":"* 3 EXISTS\r\n"}"#,
            r#"{"type":"message","seq":6,"t_us":50,"from":"server","kind":"completion","tag":"a2","name":"OK","status":"OK","reply_to":4,"text":"a2 OK\r\n"}"#,
            r#"{"type":"message","seq":7,"t_us":60,"from":"client","kind":"command","tag":"a3","name":"NOOP","text":"a3 NOOP\r\n"}"#,
            r#"{"type":"message","seq":8,"t_us":70,"from":"server","kind":"completion","tag":"a3","name":"OK","status":"OK","reply_to":7,"text":"a3 OK\r\n"}"#,
        ]);
        let report = run(
            &script,
            vec![
                Step::Say(b"* OK ready\r\n"),
                Step::Hear,
                Step::Say(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
                Step::Hear,
            ],
        )
        .await;
        let error = report.error.clone().unwrap_or_default();
        assert!(
            error.contains("refused the login") && error.contains("--login"),
            "{error}"
        );
        assert_eq!((report.sent, report.unreachable), (1, false));
        let shown = report.render(false);
        assert!(shown.contains("- S: a1 OK Logged in"), "{shown}");
        assert!(
            shown.contains("the 2 later command(s) (3 recorded responses not compared)"),
            "{shown}"
        );
        assert!(!shown.contains("* 3 EXISTS"), "{shown}");
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_told_apart_from_a_difference() {
        let script = script(&[
            GREETING,
            r#"{"type":"message","seq":2,"t_us":10,"from":"client","kind":"command","tag":"a1","name":"NOOP","text":"a1 NOOP\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":20,"from":"server","kind":"completion","tag":"a1","name":"OK","status":"OK","reply_to":2,"text":"a1 OK\r\n"}"#,
        ]);
        // A port that was free a moment ago: refused.
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let report = replay(&script, &ReplayOptions::plain(&addr)).await;
        assert!(
            report.unreachable && !report.ok(),
            "{}",
            report.render(false)
        );
        assert!(
            report.to_json()["unreachable"]
                .as_bool()
                .unwrap_or_default()
        );
    }

    #[test]
    fn commands_read_together_are_sent_together() {
        // neomutt's delete-and-sync: two commands in one write, then a LOGOUT later.
        let script = script(&[
            GREETING,
            r#"{"type":"message","seq":2,"t_us":10,"from":"client","kind":"command","tag":"a1","name":"UID STORE","text":"a1 UID STORE 3 +FLAGS.SILENT (\\Deleted)\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":10,"from":"client","kind":"command","tag":"a2","name":"EXPUNGE","text":"a2 EXPUNGE\r\n"}"#,
            r#"{"type":"message","seq":4,"t_us":20,"from":"server","kind":"untagged","tag":"*","name":"VANISHED","in_flight":[2,3],"text":"* VANISHED 3\r\n"}"#,
            r#"{"type":"message","seq":5,"t_us":20,"from":"server","kind":"completion","tag":"a1","name":"OK","status":"OK","reply_to":2,"text":"a1 OK\r\n"}"#,
            r#"{"type":"message","seq":6,"t_us":20,"from":"server","kind":"completion","tag":"a2","name":"OK","status":"OK","reply_to":3,"text":"a2 OK\r\n"}"#,
            r#"{"type":"message","seq":7,"t_us":20,"from":"client","kind":"command","tag":"a3","name":"NOOP","text":"a3 NOOP\r\n"}"#,
            r#"{"type":"message","seq":8,"t_us":30,"from":"client","kind":"command","tag":"a4","name":"LOGOUT","text":"a4 LOGOUT\r\n"}"#,
        ]);
        let at = |tag: &str| {
            script
                .timeline
                .iter()
                .position(|u| u.tag.as_deref() == Some(tag) && u.from == Side::Client)
                .unwrap()
        };
        assert!(sent_with_the_next(&script, at("a1")));
        // a2 is followed by the server's answers; a3 and a4 were read apart.
        assert!(!sent_with_the_next(&script, at("a2")));
        assert!(!sent_with_the_next(&script, at("a3")));
    }
}
