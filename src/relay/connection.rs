//! One client connection: TLS on either leg, connect upstream, copy bytes both ways, record
//! what went by.
//!
//! Each direction is a pump: read what arrived, write it to the other peer, then let the
//! [`Recorder`] follow it, in this task (see `write_then_record` for why the order stays
//! causal). A recorded session's events go on to the transcript thread, at most
//! [`QUEUE_RECORDS`](super::transcript_thread::QUEUE_RECORDS) of them unwritten: when the disk
//! is slower than the network, relaying slows down instead of memory growing.
//!
//! When both legs use STARTTLS, the pumps consult a [`StarttlsWatch`] and stop exactly at the
//! boundary; the connection then completes TLS with the server (verifying it), forwards the
//! server's OK, completes TLS with the client (with a minted certificate) and relays on.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::RelayConfig;
use super::plain_lane::{PlainLanes, Relaying};
use super::read_ahead::ReadAhead;
use super::recorder::{Annotation, Record, Recorder, RelayEvent};
use super::stream::Stream;
use super::transcript_thread::{TranscriptSink, TranscriptThread};
use crate::protocol::Side;
use crate::protocol::starttls::{ClientStep, ServerStep, StarttlsWatch};
use crate::tls::{TlsMode, diagnose, facts};
use crate::transcript::format::SessionRecord;
use crate::transcript::{FORMAT_VERSION, TranscriptWriter, file_stem, file_stem_again};

/// Bytes read at once: small while a peer is quiet (an idle session holds only this), doubled
/// each time a read fills the buffer, up to the maximum that keeps syscalls few on bulk FETCH.
pub(super) const READ_MIN: usize = 4 * 1024;
pub(super) const READ_MAX: usize = 256 * 1024;

/// After one side closed, how long the other may stay quiet before the session ends (a
/// server's last responses, however long, go on as long as they flow).
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The end reason of every session imapscope's shutdown ended, in whatever phase.
pub(super) const SHUT_DOWN: &str = "imapscope shut down";
/// How long a plain upstream may keep silent before the log suggests it speaks implicit TLS
/// (a TLS server waits for the client's hello; an IMAP server greets at once).
pub(super) const GREETING_WAIT: Duration = Duration::from_secs(5);

const INJECTION: &str = "sent after STARTTLS and before the TLS handshake: not relayed \
                         (plaintext injection, CVE-2011-0411 class)";

/// What one connection task knows (and, for plain legs, the lane that relays it).
pub(super) struct Connection {
    id: u64,
    start: Instant,
    config: Arc<RelayConfig>,
    shutdown: CancellationToken,
    /// Where sessions with plain legs are relayed; `None` if those threads could not start.
    plain_lanes: Option<Arc<PlainLanes>>,
    /// Follows the session in this task; both pumps reach it, neither holds it across an await.
    recorder: Mutex<Recorder>,
    /// Held by the one pump that hands records on to the transcript thread, waiting for room
    /// if need be, so that records reach it in the order they were made.
    handing_on: tokio::sync::Mutex<()>,
    /// To the transcript thread; `None` with `--out none`.
    transcript: Option<TranscriptSink>,
    /// Each side has sent its first bytes (client, server): the first bytes tell a peer that
    /// speaks TLS where plain IMAP was expected.
    spoke: [AtomicBool; 2],
    /// When each side's last bytes were read (µs since `start`, tokio's pumps): after one
    /// side closed, the other has [`CLOSE_GRACE`] from its last read.
    last_read_us: [AtomicU64; 2],
    /// The upstream socket, to acknowledge what the server sends at once (see
    /// [`super::stream::acknowledge_now`]); -1 until connected.
    upstream_fd: AtomicI32,
}

impl Drop for Connection {
    /// Only a connection task that panicked gets here without its end: the writer still gets
    /// an end line with what the tracker knew, if its queue has room.
    fn drop(&mut self) {
        let t_us = self.micros();
        let recorder = self.recorder.get_mut().unwrap_or_else(|e| e.into_inner());
        if recorder.ended() {
            return;
        }
        recorder.queue(RelayEvent::End {
            t_us,
            reason: "relay stopped".into(),
        });
        while let Some(record) = recorder.next_record() {
            if let Some(sink) = &self.transcript {
                sink.send_now(record);
            }
        }
    }
}

/// Relays and records one connection to its end. `accepted_at` is when it was accepted.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    id: u64,
    accepted_at: (Instant, SystemTime),
    client: TcpStream,
    client_addr: SocketAddr,
    config: Arc<RelayConfig>,
    transcripts: Option<Arc<TranscriptThread>>,
    plain_lanes: Option<Arc<PlainLanes>>,
    shutdown: CancellationToken,
) {
    let (start, started) = accepted_at;
    // Without the transcript thread (it could not start: logged once) no file is begun.
    let mut writer = match &transcripts {
        Some(_) => open_writer(&config, id, started).await,
        None => TranscriptWriter::discard(),
    };
    writer.session(SessionRecord {
        version: FORMAT_VERSION,
        imapscope: env!("CARGO_PKG_VERSION").into(),
        id,
        client: client_addr.to_string(),
        listen: config.listen.to_string(),
        upstream: config.upstream.clone(),
        start: humantime::format_rfc3339_micros(started).to_string(),
        redaction: writer.redacts(),
    });
    // On disk at once, so a session shows up while the upstream is still being reached.
    if let Err(e) = writer.flush().await {
        tracing::error!("#{id} transcript write failed: {e}");
    }
    let _ = client.set_nodelay(true);
    let transcript = match transcripts {
        Some(thread) if !writer.keeps_nothing() => {
            let sink = thread.open(id, writer);
            if sink.is_none() {
                tracing::error!("#{id} the transcript thread is gone; relaying without recording");
            }
            sink
        }
        _ => None,
    };
    let keeps = transcript.is_some();
    let recorder = match config.client_tls {
        TlsMode::Starttls => Recorder::new(id, keeps).expecting_starttls(),
        _ => Recorder::new(id, keeps),
    };
    let conn = Arc::new(Connection {
        id,
        start,
        config,
        shutdown,
        plain_lanes,
        recorder: Mutex::new(recorder),
        handing_on: tokio::sync::Mutex::new(()),
        transcript,
        spoke: [AtomicBool::new(false), AtomicBool::new(false)],
        last_read_us: [AtomicU64::new(0), AtomicU64::new(0)],
        upstream_fd: AtomicI32::new(-1),
    });
    tracing::info!("#{id} {client_addr} connected");
    let reason = conn.run(client).await;
    conn.tell(RelayEvent::End {
        t_us: conn.micros(),
        reason: reason.clone(),
    })
    .await;
    // The lane that relayed the session (if one did) has let go of it by now.
    let transcript = match Arc::try_unwrap(conn) {
        Ok(mut conn) => conn.transcript.take(),
        Err(_) => None,
    };
    let path = match transcript {
        None => None,
        Some(sink) => sink.close().await.and_then(|w| w.path().map(PathBuf::from)),
    };
    match path {
        Some(path) => tracing::info!("#{id} closed: {reason}; transcript {}", path.display()),
        None => tracing::info!("#{id} closed: {reason}"),
    }
}

/// Opens the transcript file; if that fails the session is still relayed, unrecorded, and
/// the reason is logged.
async fn open_writer(config: &RelayConfig, id: u64, started: SystemTime) -> TranscriptWriter {
    let Some(dir) = &config.out else {
        return TranscriptWriter::discard();
    };
    let stem = file_stem(started, id);
    let mut last_error = None;
    for attempt in 0..10 {
        let name = if attempt == 0 {
            stem.clone()
        } else {
            file_stem_again(&stem, attempt)
        };
        match TranscriptWriter::create(dir, &name, config.redact).await {
            Ok(w) => return w,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                last_error = Some(e);
                break;
            }
        }
    }
    tracing::error!(
        "#{id} cannot create a transcript in {}: {}; relaying without recording",
        dir.display(),
        last_error.map_or("name collisions".to_string(), |e| e.to_string())
    );
    TranscriptWriter::discard()
}

/// How a relay phase ended.
enum Phase {
    Closed(String),
    /// Both legs agreed to STARTTLS; `ok` is the server's tagged OK, not yet relayed.
    Starttls {
        ok: Bytes,
    },
}

impl Connection {
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// `side` has sent bytes before.
    pub(super) fn spoke(&self, side: Side) -> bool {
        self.spoke[side as usize].load(Ordering::Relaxed)
    }

    /// Whether these are the first bytes `side` sends (true once).
    pub(super) fn first_bytes(&self, side: Side) -> bool {
        // A plain load per chunk; the swap happens once, on the first.
        !self.spoke(side) && !self.spoke[side as usize].swap(true, Ordering::Relaxed)
    }

    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `event` for the tracker (see [`Recorder::queue`]).
    pub(super) fn queue(&self, event: RelayEvent) {
        self.recorder().queue(event);
    }

    /// The next record of what is queued for the transcript writer (see
    /// [`Recorder::next_record`]).
    pub(super) fn next_record(&self) -> Option<Record> {
        self.recorder().next_record()
    }

    /// Queues `record` for the transcript thread if the session has room there; gives it
    /// back if not.
    pub(super) fn offer(&self, record: Record) -> Option<Record> {
        self.transcript.as_ref()?.try_send(record)
    }

    /// Has `wake` called when the transcript thread has room again after an [`offer`] found
    /// none.
    ///
    /// [`offer`]: Connection::offer
    pub(super) fn on_room(&self, wake: Box<dyn Fn() + Send + Sync>) {
        if let Some(sink) = &self.transcript {
            sink.on_room(wake);
        }
    }

    /// Queues `record` for the transcript thread whether or not the session has room.
    pub(super) fn offer_now(&self, record: Record) {
        if let Some(sink) = &self.transcript {
            sink.send_now(record);
        }
    }

    pub(super) fn server_may_send_more(&self) -> bool {
        self.recorder
            .lock()
            .map_or(true, |r| r.server_may_send_more())
    }

    /// Records `event`: the tracker follows it and the transcript writer gets what it made of
    /// it, a record at a time, waiting for room between records.
    async fn tell(&self, event: RelayEvent) {
        let Some(sink) = &self.transcript else {
            // Nothing is kept: the tracker only follows, and makes no record.
            let _ = self.recorder().handle(event);
            return;
        };
        self.queue(event);
        let _turn = self.handing_on.lock().await;
        while let Some(record) = self.next_record() {
            sink.send(record).await;
        }
    }

    async fn error(&self, during: &str, message: &str) {
        self.tell(self.error_event(during, message)).await;
    }

    /// An error to record: what imapscope was doing, and what went wrong.
    pub(super) fn error_event(&self, during: &str, message: &str) -> RelayEvent {
        RelayEvent::Said(Annotation::Error {
            t_us: self.micros(),
            during: during.to_string(),
            message: message.to_string(),
        })
    }

    /// The whole life of the connection; returns why it ended.
    async fn run(self: &Arc<Self>, client: TcpStream) -> String {
        let mut client = match self.config.client_tls {
            TlsMode::Tls => match self.accept_tls(client).await {
                Ok(s) => s,
                Err(reason) => return reason,
            },
            _ => Stream::Plain(client),
        };
        let upstream = tokio::select! {
            r = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(&self.config.upstream)) => {
                match r {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", self.config.connect_timeout.as_secs())),
                }
            }
            _ = self.shutdown.cancelled() => return self.shut_down_in_setup(&mut client).await,
        };
        let upstream = match upstream {
            Ok(s) => s,
            Err(reason) => {
                let message = format!("cannot reach upstream {}: {reason}", self.config.upstream);
                self.error("upstream-connect", &message).await;
                self.refuse(&mut client, &message).await;
                return "upstream unreachable".into();
            }
        };
        let _ = upstream.set_nodelay(true);
        self.upstream_fd.store(
            std::os::fd::AsRawFd::as_raw_fd(&upstream),
            Ordering::Relaxed,
        );
        let mut upstream = match self.config.upstream_tls {
            TlsMode::Tls => match self.connect_tls(upstream).await {
                Ok(s) => s,
                Err(_) if self.shutdown.is_cancelled() => {
                    return self.shut_down_in_setup(&mut client).await;
                }
                Err(message) => {
                    self.refuse(&mut client, &message).await;
                    return "upstream TLS handshake failed".into();
                }
            },
            _ => Stream::Plain(upstream),
        };
        tracing::debug!("#{} relaying to {}", self.id, self.config.upstream);

        let mut intercept_starttls = self.config.client_tls == TlsMode::Starttls
            && self.config.upstream_tls == TlsMode::Starttls;
        if !intercept_starttls
            && !client.is_tls()
            && !upstream.is_tls()
            && let Some(lanes) = &self.plain_lanes
        {
            match self.to_plain_lane(lanes, client, upstream) {
                Ok(relaying) => return relaying.ended(&self.shutdown).await,
                Err(Some((c, u))) => (client, upstream) = (c, u),
                Err(None) => return "cannot hand the sockets to a relay thread".into(),
            }
        }
        loop {
            match self
                .relay(&mut client, &mut upstream, intercept_starttls)
                .await
            {
                Phase::Closed(reason) => return reason,
                Phase::Starttls { ok } => {
                    let (Stream::Plain(up), Stream::Plain(down)) = (upstream, client) else {
                        return "STARTTLS on a leg that is already TLS".into();
                    };
                    upstream = match self.connect_tls(up).await {
                        Ok(s) => s,
                        Err(_) if self.shutdown.is_cancelled() => {
                            return self.shut_down_in_setup(&mut Stream::Plain(down)).await;
                        }
                        Err(message) => {
                            let mut down = Stream::Plain(down);
                            self.tell(RelayEvent::Said(Annotation::Note {
                                t_us: self.micros(),
                                side: Some(Side::Server),
                                text: "the server's OK to STARTTLS was not relayed: the upstream \
                                       handshake failed"
                                    .into(),
                            }))
                            .await;
                            self.refuse(&mut down, &message).await;
                            return "upstream TLS handshake failed".into();
                        }
                    };
                    let mut down = down;
                    if let Err(e) = down.write_all(&ok).await {
                        return format!("writing to client failed: {e}");
                    }
                    client = match self.accept_tls(down).await {
                        Ok(s) => s,
                        Err(reason) => return reason,
                    };
                    intercept_starttls = false;
                }
            }
        }
    }

    /// Plain legs go to a [`PlainLanes`] thread. Gives the streams back when they cannot
    /// (a TLS leg, or the lane's thread is gone); `None` if they were lost on the way.
    #[allow(clippy::type_complexity)]
    fn to_plain_lane(
        self: &Arc<Self>,
        lanes: &PlainLanes,
        client: Stream,
        upstream: Stream,
    ) -> Result<Relaying, Option<(Stream, Stream)>> {
        let (client, upstream) = match (client, upstream) {
            (Stream::Plain(client), Stream::Plain(upstream)) => (client, upstream),
            streams => return Err(Some(streams)),
        };
        let handed = client
            .into_std()
            .and_then(|c| Ok((c, upstream.into_std()?)));
        let (client, upstream) = match handed {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!(
                    "#{} cannot hand the sockets to a relay thread: {e}",
                    self.id
                );
                return Err(None);
            }
        };
        lanes
            .relay(self.clone(), client, upstream)
            .map_err(|(c, u)| {
                let back = TcpStream::from_std(c).and_then(|c| Ok((c, TcpStream::from_std(u)?)));
                back.ok().map(|(c, u)| (Stream::Plain(c), Stream::Plain(u)))
            })
    }

    /// What a refusal sends the client (an untagged BYE, as IMAP does) and the transcript's
    /// note of it.
    pub(super) fn refusal(&self, message: &str) -> (String, String) {
        let bye = format!("* BYE [UNAVAILABLE] imapscope: {message}\r\n");
        let note = format!("imapscope answered the client itself: {}", bye.trim_end());
        (bye, note)
    }

    /// Tells the client why there will be no session, as IMAP does: an untagged BYE.
    async fn refuse<W: AsyncWrite + Unpin>(&self, client: &mut W, message: &str) {
        tracing::warn!("#{} {message}", self.id);
        let (bye, note) = self.refusal(message);
        self.tell(RelayEvent::Said(Annotation::Note {
            t_us: self.micros(),
            side: Some(Side::Client),
            text: note,
        }))
        .await;
        let _ = client.write_all(bye.as_bytes()).await;
        let _ = client.shutdown().await;
    }

    /// Shutdown came while the connection was still being set up (the upstream being reached,
    /// its TLS handshake): that, not a failure of the upstream, is why it ends. The client
    /// hears why (the BYE a server that shuts down sends), as far as it can be told.
    async fn shut_down_in_setup(&self, client: &mut Stream) -> String {
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            let _ = client
                .write_all(b"* BYE [UNAVAILABLE] imapscope is shutting down\r\n")
                .await;
            let _ = client.shutdown().await;
        })
        .await;
        SHUT_DOWN.into()
    }

    /// TLS with the client, as a server with a certificate minted for its SNI.
    async fn accept_tls(&self, tcp: TcpStream) -> Result<Stream, String> {
        let Some(leg) = &self.config.tls.client_leg else {
            self.error(
                "client-tls-handshake",
                "no TLS configured for the client leg",
            )
            .await;
            return Err("client TLS not configured".into());
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(leg.config.clone());
        let handshake = tokio::time::timeout(
            self.config.connect_timeout,
            acceptor.accept(ReadAhead::new(tcp)),
        );
        let result = tokio::select! {
            r = handshake => r,
            _ = self.shutdown.cancelled() => return Err(SHUT_DOWN.into()),
        };
        match result {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                let sni = conn.server_name().map(String::from);
                let leaf = leg
                    .authority
                    .leaf(sni.as_deref().unwrap_or(&self.config.tls.upstream_host))
                    .ok();
                let record = facts(
                    "client",
                    self.micros(),
                    conn,
                    sni.as_deref(),
                    leaf.as_ref().and_then(|l| l.cert.first()),
                );
                tracing::info!(
                    "#{} client TLS: {} {}, SNI {}",
                    self.id,
                    record.version,
                    record.cipher,
                    record.sni.as_deref().unwrap_or("(none)")
                );
                self.tell(RelayEvent::Said(Annotation::Tls(Box::new(record))))
                    .await;
                Ok(Stream::TlsToClient(Box::new(tls)))
            }
            Ok(Err(e)) => {
                let message = match self.config.client_tls {
                    TlsMode::Starttls => diagnose::client_failure_after_starttls(&e),
                    _ => diagnose::client_failure(&e),
                };
                tracing::warn!("#{} {message}", self.id);
                self.error("client-tls-handshake", &message).await;
                Err("client TLS handshake failed".into())
            }
            Err(_) => {
                let message = diagnose::client_silent(self.config.connect_timeout);
                tracing::warn!("#{} {message}", self.id);
                self.error("client-tls-handshake", &message).await;
                Err("client TLS handshake failed".into())
            }
        }
    }

    /// TLS with the server, verifying it; SNI is the upstream host name.
    async fn connect_tls(&self, tcp: TcpStream) -> Result<Stream, String> {
        let setup = &self.config.tls;
        let Some(upstream_leg) = &setup.upstream_leg else {
            let message = "no TLS configured for the upstream leg".to_string();
            self.error("upstream-tls-handshake", &message).await;
            return Err(message);
        };
        let name = match ServerName::try_from(setup.upstream_host.clone()) {
            Ok(n) => n,
            Err(e) => {
                let message = format!(
                    "upstream host `{}` is not a valid TLS name: {e}",
                    setup.upstream_host
                );
                self.error("upstream-tls-handshake", &message).await;
                return Err(message);
            }
        };
        let connector = tokio_rustls::TlsConnector::from(upstream_leg.config.clone());
        let handshake = tokio::time::timeout(
            self.config.connect_timeout,
            connector.connect(name, ReadAhead::new(tcp)),
        );
        let result = tokio::select! {
            r = handshake => r,
            _ = self.shutdown.cancelled() => return Err(SHUT_DOWN.into()),
        };
        match result {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                let sni = matches!(
                    ServerName::try_from(setup.upstream_host.as_str()),
                    Ok(ServerName::DnsName(_))
                )
                .then_some(setup.upstream_host.as_str());
                let certificate = conn.peer_certificates().and_then(|c| c.first());
                let mut record = facts("upstream", self.micros(), conn, sni, certificate);
                record.verified = certificate.map(|c| upstream_leg.trust.verified_by(c));
                tracing::info!(
                    "#{} upstream TLS: {} {}, certificate {} ({})",
                    self.id,
                    record.version,
                    record.cipher,
                    record.subject.as_deref().unwrap_or("?"),
                    record.verified.as_deref().unwrap_or("?")
                );
                self.tell(RelayEvent::Said(Annotation::Tls(Box::new(record))))
                    .await;
                Ok(Stream::TlsToServer(Box::new(tls)))
            }
            Ok(Err(e)) => {
                let message = diagnose::upstream_failure(&e, &self.config.upstream);
                self.error("upstream-tls-handshake", &message).await;
                Err(message)
            }
            Err(_) => {
                let message = format!(
                    "the TLS handshake with the server at {} did not finish within {} s",
                    self.config.upstream,
                    self.config.connect_timeout.as_secs()
                );
                self.error("upstream-tls-handshake", &message).await;
                Err(message)
            }
        }
    }

    /// Relays until the connection ends, or until both legs agreed to STARTTLS.
    async fn relay(&self, client: &mut Stream, upstream: &mut Stream, starttls: bool) -> Phase {
        // A TLS leg's socket, to end it without close_notify when the other leg ended uncleanly.
        let client_tls_fd = client.is_tls().then(|| client.tcp_fd());
        let upstream_tls_fd = upstream.is_tls().then(|| upstream.tcp_fd());
        let (client_read, client_write) = client.halves();
        let (upstream_read, upstream_write) = upstream.halves();
        let gate = starttls.then(|| Gate {
            watch: Mutex::new(StarttlsWatch::new()),
            verdict: watch::channel(None).0,
        });
        let mut to_server = Box::pin(self.pump(
            client_read,
            (upstream_write, upstream_tls_fd),
            Side::Client,
            gate.as_ref(),
        ));
        let mut to_client = Box::pin(self.pump(
            upstream_read,
            (client_write, client_tls_fd),
            Side::Server,
            gate.as_ref(),
        ));

        // `wait_*`: that direction is still running (a finished future must not be polled again).
        // Biased: polled in this order on every wake-up, without drawing a random start; each
        // pump gives way after a bulk chunk, so neither direction starves the other.
        let (first, wait_to_client, wait_to_server) = tokio::select! {
            biased;
            end = &mut to_server => (Some(end), true, false),
            end = &mut to_client => (Some(end), false, true),
            _ = self.shutdown.cancelled() => (None, false, false),
        };
        let Some(first) = first else {
            return Phase::Closed(SHUT_DOWN.into());
        };
        if let PumpEnd::Upgrade(ok) = &first {
            // The other pump stops at the boundary too (the verdict is out).
            let ok = ok.clone();
            let other = if wait_to_client {
                (&mut to_client).await
            } else {
                (&mut to_server).await
            };
            let ok = ok.or(match &other {
                PumpEnd::Upgrade(ok) => ok.clone(),
                _ => None,
            });
            return match ok {
                Some(ok) => Phase::Starttls { ok },
                None => Phase::Closed(other.describe()),
            };
        }
        if !first.is_clean() {
            return Phase::Closed(first.describe());
        }
        let first_ended = self.start.elapsed();
        // The grace runs from the open direction's last read (see `last_read_us`).
        let open_side = if wait_to_client {
            Side::Server
        } else {
            Side::Client
        };
        let other = loop {
            let quiet_since = self.last_read_us[open_side as usize].load(Ordering::Relaxed);
            let deadline =
                self.start + Duration::from_micros(quiet_since).max(first_ended) + CLOSE_GRACE;
            tokio::select! {
                end = &mut to_client, if wait_to_client => break Some(end),
                end = &mut to_server, if wait_to_server => break Some(end),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if self.last_read_us[open_side as usize].load(Ordering::Relaxed) == quiet_since {
                        break None;
                    }
                }
                _ = self.shutdown.cancelled() => break None,
            }
        };
        Phase::Closed(first.session_end(other.as_ref()))
    }

    /// Writes `chunk` to the other peer and records it (see [`write_then_record`]).
    async fn forward<W: AsyncWrite + Unpin>(
        &self,
        to: &mut W,
        side: Side,
        t_us: u64,
        chunk: Bytes,
    ) -> std::io::Result<()> {
        write_then_record(to, &chunk, self.record(side, t_us, &chunk)).await
    }

    async fn record(&self, side: Side, t_us: u64, chunk: &Bytes) {
        self.tell(RelayEvent::Bytes {
            side,
            t_us,
            data: chunk.clone(),
        })
        .await;
    }

    /// Copies what `side` sends to its peer and records it (see [`Connection::forward`]).
    /// `to` is the writing half and, for a TLS leg, its socket (see
    /// [`super::stream::end_without_close_notify`]).
    async fn pump<R, W>(
        &self,
        mut from: R,
        (mut to, to_tls_fd): (W, Option<std::os::fd::RawFd>),
        side: Side,
        gate: Option<&Gate>,
    ) -> PumpEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::new();
        let mut size = READ_MIN;
        // A plain upstream that has not greeted yet may be waiting for a TLS hello. Watched on
        // the first read only, here rather than beside the pumps, so that the timer is not
        // polled at every wake-up of a busy session.
        let mut watch_greeting = side == Side::Server
            && self.config.upstream_tls != TlsMode::Tls
            && !self.spoke[Side::Server as usize].load(Ordering::Relaxed);
        loop {
            buf.reserve(size);
            let read = if watch_greeting {
                watch_greeting = false;
                // `read_buf` is cancel-safe: nothing read is lost when the timeout wins.
                match tokio::time::timeout(GREETING_WAIT, from.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => {
                        self.tell(self.silent_upstream()).await;
                        from.read_buf(&mut buf).await
                    }
                }
            } else {
                from.read_buf(&mut buf).await
            };
            // Bulk traffic (see the yield below): a read of at least a small buffer's worth.
            // Commands and their short answers come in smaller reads.
            let bulk = matches!(read, Ok(n) if n >= READ_MIN);
            match read {
                Ok(0) => {
                    if side == Side::Server
                        && self.config.upstream_tls != TlsMode::Tls
                        && !self.spoke(Side::Server)
                    {
                        let message = self.server_closed_before_greeting();
                        self.error("upstream-greeting", &message).await;
                        self.refuse(&mut to, &message).await;
                        return PumpEnd::Refused(message);
                    }
                    let _ = to.shutdown().await;
                    return PumpEnd::Eof(side);
                }
                Ok(n) if n >= size => size = (size * 2).min(READ_MAX),
                Ok(n) if n < size / 8 => size = (size / 2).max(READ_MIN),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // rustls: the peer closed the TCP connection without TLS's close_notify.
                    // Cyrus does so after LOGOUT; passed on the same way, so that a peer on a
                    // TLS leg can tell it from a clean end, as it could directly.
                    end_uncleanly(&mut to, to_tls_fd).await;
                    return PumpEnd::EofWithoutCloseNotify(side);
                }
                Err(e) => {
                    end_uncleanly(&mut to, to_tls_fd).await;
                    return PumpEnd::ReadError(side, e);
                }
            }
            let t_us = self.micros();
            self.last_read_us[side as usize].store(t_us, Ordering::Relaxed);
            let mut chunk: Bytes = buf.split().freeze();
            if self.first_bytes(side)
                && let Some(message) = self.speaks_tls_unexpectedly(side, t_us, &chunk).await
            {
                // The client speaks plain IMAP: it can read why.
                self.refuse(&mut to, &message).await;
                return PumpEnd::Refused(message);
            }
            let mut after = None;
            if let Some(gate) = gate {
                match gate.step(side, &chunk) {
                    Step::Forward => {}
                    Step::StopAfter(end) => after = Some(Stop::WaitVerdict(chunk.split_off(end))),
                    Step::Hold(start, end) => {
                        let dropped = chunk.split_off(end);
                        let ok = chunk.split_off(start);
                        after = Some(Stop::Upgrade { ok, dropped });
                    }
                }
            }
            if !chunk.is_empty()
                && let Err(e) = self.forward(&mut to, side, t_us, chunk).await
            {
                return PumpEnd::WriteError(side, e);
            }
            if side == Side::Server {
                // After the forward, so that the system call is not in the response's way;
                // and only while the server may have more to send (a held last segment
                // waits for this ACK). Once all that was asked is answered, the ACK rides on
                // the next command instead of costing a packet and a system call per
                // round trip.
                let fd = self.upstream_fd.load(Ordering::Relaxed);
                if fd >= 0 && self.server_may_send_more() {
                    super::stream::acknowledge_now(fd);
                }
            }
            // During bulk traffic, back to the scheduler after each chunk (tokio then polls its
            // I/O driver before resuming this task). Measured in the load benchmark, with the
            // two builds in the same turns: both legs TLS 1.67-1.76 s/GB with it against
            // 2.05-2.34 without. Since the tracker runs in this task, nothing else makes the
            // pump give way between chunks. After a short read the next read most likely waits
            // anyway, and a yield there cost each hop of a round trip one more `epoll_wait`.
            if bulk {
                tokio::task::yield_now().await;
            }
            match after {
                None => {}
                Some(Stop::WaitVerdict(dropped)) => {
                    self.drop_injected(side, t_us, dropped).await;
                    let Some(gate) = gate else { continue };
                    let mut verdict = gate.verdict.subscribe();
                    let accepted = tokio::select! {
                        v = verdict.wait_for(|v| v.is_some()) => v.ok().and_then(|v| *v).unwrap_or(false),
                        _ = self.shutdown.cancelled() => return PumpEnd::Eof(side),
                    };
                    if accepted {
                        return PumpEnd::Upgrade(None);
                    }
                }
                Some(Stop::Upgrade { ok, dropped }) => {
                    // The OK is the server's; the recorder sees it now, the client after the
                    // upstream handshake.
                    self.tell(RelayEvent::Bytes {
                        side,
                        t_us,
                        data: ok.clone(),
                    })
                    .await;
                    self.drop_injected(side, t_us, dropped).await;
                    return PumpEnd::Upgrade(Some(ok));
                }
            }
        }
    }

    /// Records what [`Connection::unexpected_tls`] found; returns the sentence to refuse the
    /// client with when the session cannot go on.
    async fn speaks_tls_unexpectedly(
        &self,
        side: Side,
        t_us: u64,
        first: &Bytes,
    ) -> Option<String> {
        let found = self.unexpected_tls(side, t_us, first)?;
        for event in found.record {
            self.tell(event).await;
        }
        found.refusal
    }

    /// The first bytes of `side` open a TLS record where imapscope expects plain IMAP: the
    /// peer is set up for implicit TLS. A client's hello is still relayed unchanged (the
    /// relay never drops what a client sends) and the sentence goes to the log and the
    /// transcript; a server that answers in TLS cannot serve a plain IMAP client at all, so
    /// that session ends, and the client is told why. Shared by the tokio pumps and the
    /// plain lanes, which record the result each their own way.
    pub(super) fn unexpected_tls(
        &self,
        side: Side,
        t_us: u64,
        first: &Bytes,
    ) -> Option<UnexpectedTls> {
        let tls_leg = match side {
            Side::Client => self.config.client_tls == TlsMode::Tls,
            Side::Server => self.config.upstream_tls == TlsMode::Tls,
        };
        if tls_leg || !looks_like_tls(first) {
            return None;
        }
        Some(match side {
            Side::Client => {
                let message = diagnose::client_tls_on_plain_port();
                tracing::warn!("#{} {message}", self.id);
                UnexpectedTls {
                    record: vec![self.error_event("client-tls", &message)],
                    refusal: None,
                }
            }
            Side::Server => {
                let message = diagnose::server_tls_on_plain_connection(&self.config.upstream);
                UnexpectedTls {
                    record: vec![
                        RelayEvent::Said(Annotation::Dropped {
                            side,
                            t_us,
                            data: first.clone(),
                            reason: "a TLS record where plain IMAP was expected: not relayed"
                                .into(),
                        }),
                        self.error_event("upstream-tls", &message),
                    ],
                    refusal: Some(message),
                }
            }
        })
    }

    /// A plain IMAP server greets first; one that hangs up without a word after the client
    /// spoke is most often a TLS port.
    pub(super) fn server_closed_before_greeting(&self) -> String {
        diagnose::server_closed_before_greeting(&self.config.upstream)
    }

    /// The plain upstream has said nothing for [`GREETING_WAIT`]: logs what that may mean and
    /// returns the note to record (each path records it its own way).
    pub(super) fn silent_upstream(&self) -> RelayEvent {
        let text = format!(
            "the server at {} has sent no greeting after {} s; if that port speaks implicit \
             TLS (as port 993 does), run imapscope with --upstream-tls tls",
            self.config.upstream,
            GREETING_WAIT.as_secs()
        );
        tracing::warn!("#{} {text}", self.id);
        RelayEvent::Said(Annotation::Note {
            t_us: self.micros(),
            side: Some(Side::Server),
            text,
        })
    }

    async fn drop_injected(&self, side: Side, t_us: u64, data: Bytes) {
        if data.is_empty() {
            return;
        }
        tracing::warn!(
            "#{} {} bytes from the {} {INJECTION}",
            self.id,
            data.len(),
            side.as_str()
        );
        self.tell(RelayEvent::Said(Annotation::Dropped {
            side,
            t_us,
            data,
            reason: INJECTION.into(),
        }))
        .await;
    }
}

/// A TLS record header (handshake or alert, version 3.x) where IMAP text would start with a
/// `*`, a tag or `+`.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

/// TLS bytes found on a plain leg (see [`Connection::unexpected_tls`]).
pub(super) struct UnexpectedTls {
    /// What to record, in this order.
    pub(super) record: Vec<RelayEvent>,
    /// The sentence to refuse the client with when the session cannot go on.
    pub(super) refusal: Option<String>,
}

/// Writes `chunk` to `to` and runs `record`, in the order that keeps the transcript causal
/// without making the relay wait for the tracker: after the write when the peer takes the
/// chunk at once (the usual case), but before waiting when the peer's buffer is full, because
/// the other direction may run while this one waits, and the peer's answer to these bytes
/// must not be recorded before them. The two pumps share one task, so nothing runs between a
/// write that did not wait and the recording that follows it. A failed write is recorded too:
/// the sender did send those bytes.
async fn write_then_record<W: AsyncWrite + Unpin>(
    to: &mut W,
    chunk: &[u8],
    record: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut record = Some(record);
    let mut written = 0;
    let result = loop {
        if written == chunk.len() {
            break Ok(());
        }
        let rest = &chunk[written..];
        // One attempt; `Pending` means the peer's buffer is full.
        let attempt = poll_fn(|cx| Poll::Ready(Pin::new(&mut *to).poll_write(cx, rest))).await;
        let attempt = match attempt {
            Poll::Ready(r) => r,
            Poll::Pending => {
                if let Some(record) = record.take() {
                    record.await;
                }
                poll_fn(|cx| Pin::new(&mut *to).poll_write(cx, rest)).await
            }
        };
        match attempt {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) => break Err(e),
        }
    };
    // A TLS leg may take the whole chunk and still hold records the socket had no room for
    // (tokio-rustls returns `Ok` then). Nothing would send them before this leg's next write,
    // and after the last chunk of a response there is none: the peer would wait for ever. So
    // the chunk is flushed, waiting for the socket like a write does. (A plain leg's flush
    // returns at once.)
    let result = match result {
        Ok(()) => match poll_fn(|cx| Poll::Ready(Pin::new(&mut *to).poll_flush(cx))).await {
            Poll::Ready(r) => r,
            Poll::Pending => {
                if let Some(record) = record.take() {
                    record.await;
                }
                poll_fn(|cx| Pin::new(&mut *to).poll_flush(cx)).await
            }
        },
        Err(e) => Err(e),
    };
    if let Some(record) = record {
        record.await;
    }
    result
}

/// The STARTTLS boundary shared by the two pumps of one connection.
struct Gate {
    watch: Mutex<StarttlsWatch>,
    /// `Some(true)` once the server accepted STARTTLS, `Some(false)` if it refused.
    verdict: watch::Sender<Option<bool>>,
}

enum Step {
    Forward,
    /// Forward up to here, then wait for the server's verdict.
    StopAfter(usize),
    /// Forward up to `.0`, hold `.0..1` (the OK), drop the rest.
    Hold(usize, usize),
}

enum Stop {
    WaitVerdict(Bytes),
    Upgrade { ok: Bytes, dropped: Bytes },
}

impl Gate {
    fn step(&self, side: Side, chunk: &[u8]) -> Step {
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        match side {
            Side::Client => match watch.client(chunk) {
                ClientStep::Forward => Step::Forward,
                ClientStep::Starttls { end, .. } => {
                    self.verdict.send_replace(None);
                    Step::StopAfter(end)
                }
            },
            Side::Server => match watch.server(chunk) {
                ServerStep::Forward => Step::Forward,
                ServerStep::Refused => {
                    self.verdict.send_replace(Some(false));
                    Step::Forward
                }
                ServerStep::Accepted { start, end } => {
                    self.verdict.send_replace(Some(true));
                    Step::Hold(start, end)
                }
            },
        }
    }
}

/// Passes on an unclean end: a TLS leg's socket is ended without close_notify, a plain one
/// with its FIN.
async fn end_uncleanly<W: AsyncWrite + Unpin>(to: &mut W, tls_fd: Option<std::os::fd::RawFd>) {
    match tls_fd {
        Some(fd) => super::stream::end_without_close_notify(fd),
        None => {
            let _ = to.shutdown().await;
        }
    }
}

/// How one direction ended.
pub(super) enum PumpEnd {
    /// The sender closed its side.
    Eof(Side),
    ReadError(Side, std::io::Error),
    WriteError(Side, std::io::Error),
    /// Stopped at the STARTTLS boundary; the server's pump carries the held OK.
    Upgrade(Option<Bytes>),
    /// The sender closed a TLS leg without close_notify: an end, not a failure.
    EofWithoutCloseNotify(Side),
    /// imapscope ended the session: the sentence says why.
    Refused(String),
}

impl PumpEnd {
    pub(super) fn is_clean(&self) -> bool {
        matches!(self, PumpEnd::Eof(_) | PumpEnd::EofWithoutCloseNotify(_))
    }

    /// Why the session ended, this direction having ended first and cleanly, `then` the other
    /// direction's end if it came within the close grace: a clean second end adds nothing.
    /// The tokio pumps and the plain lanes both word it here.
    pub(super) fn session_end(&self, then: Option<&PumpEnd>) -> String {
        match then {
            // The server hung up (after LOGOUT) and the client, closing with bytes unread
            // (imapscope's close_notify, say), reset its end: how many clients end, no fault.
            Some(PumpEnd::ReadError(Side::Client, e))
                if self.is_clean()
                    && e.kind() == std::io::ErrorKind::ConnectionReset
                    && matches!(
                        self,
                        PumpEnd::Eof(Side::Server) | PumpEnd::EofWithoutCloseNotify(Side::Server)
                    ) =>
            {
                format!("{}; the client then reset its end", self.describe())
            }
            Some(then) if !then.is_clean() => {
                format!("{}; then {}", self.describe(), then.describe())
            }
            _ => self.describe(),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            PumpEnd::Eof(side) => format!("{} closed", side.as_str()),
            PumpEnd::ReadError(side, e) => {
                let words = crate::tls::diagnose::established_failure(e, side.as_str())
                    .unwrap_or_else(|| e.to_string());
                format!("reading from {} failed: {words}", side.as_str())
            }
            PumpEnd::WriteError(side, e) => {
                format!("writing to {} failed: {e}", side.peer().as_str())
            }
            PumpEnd::Upgrade(_) => "STARTTLS".into(),
            PumpEnd::EofWithoutCloseNotify(side) => {
                format!("{} closed without TLS close_notify", side.as_str())
            }
            PumpEnd::Refused(message) => message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_client_resetting_after_the_server_hung_up_is_no_fault() {
        let reset = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            PumpEnd::Eof(Side::Server)
                .session_end(Some(&PumpEnd::ReadError(Side::Client, reset()))),
            "server closed; the client then reset its end"
        );
        // A server that resets after the client closed is still said as it is.
        assert!(
            PumpEnd::Eof(Side::Client)
                .session_end(Some(&PumpEnd::ReadError(Side::Server, reset())))
                .starts_with("client closed; then reading from server failed")
        );
    }

    /// A peer that takes `take_first` bytes, then has a full buffer once, then takes the rest.
    struct FullOnce {
        taken: Arc<Mutex<Vec<u8>>>,
        take_first: usize,
        was_full: bool,
        fail: bool,
    }

    impl FullOnce {
        fn new(take_first: usize) -> (FullOnce, Arc<Mutex<Vec<u8>>>) {
            let taken = Arc::new(Mutex::new(Vec::new()));
            let peer = FullOnce {
                taken: taken.clone(),
                take_first,
                was_full: false,
                fail: false,
            };
            (peer, taken)
        }
    }

    impl AsyncWrite for FullOnce {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let so_far = self.taken.lock().unwrap().len();
            if so_far >= self.take_first && !self.was_full {
                self.was_full = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.fail {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let n = if so_far < self.take_first {
                buf.len().min(self.take_first - so_far)
            } else {
                buf.len()
            };
            self.taken.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// How many bytes the peer had taken when the chunk was recorded.
    async fn taken_at_record(peer: &mut FullOnce, taken: &Arc<Mutex<Vec<u8>>>) -> (usize, bool) {
        let seen = Arc::new(Mutex::new(None));
        let record = {
            let seen = seen.clone();
            let taken = taken.clone();
            async move {
                *seen.lock().unwrap() = Some(taken.lock().unwrap().len());
            }
        };
        let ok = write_then_record(peer, b"a1 NOOP\r\na2 NOOP\r\n", record)
            .await
            .is_ok();
        let at = seen.lock().unwrap().expect("recorded");
        (at, ok)
    }

    #[tokio::test]
    async fn a_chunk_the_peer_takes_at_once_is_recorded_after_it_is_written() {
        let (mut peer, taken) = FullOnce::new(usize::MAX);
        assert_eq!(taken_at_record(&mut peer, &taken).await, (18, true));
    }

    #[tokio::test]
    async fn a_chunk_that_must_wait_is_recorded_before_the_wait() {
        // The peer has the first command, and may answer it, before the rest is written: the
        // chunk is in the transcript by then.
        let (mut peer, taken) = FullOnce::new(9);
        assert_eq!(taken_at_record(&mut peer, &taken).await, (9, true));
        assert_eq!(taken.lock().unwrap().as_slice(), b"a1 NOOP\r\na2 NOOP\r\n");
    }

    #[tokio::test]
    async fn records_rustls_holds_back_are_sent_before_a_chunk_counts_as_written() {
        // tokio-rustls takes a chunk whole when its record buffer (64 KiB) has room, writes
        // what the socket takes and returns `Ok` with the rest held. Without the flush, the
        // end of an answer waited there for the next write on that leg, and a client that had
        // asked for it waited for ever (seen in the load benchmark). The "socket" here is a
        // 16 KiB pipe, so most of a 60 KB chunk is held when the write returns.
        use tokio_rustls::{TlsAcceptor, TlsConnector, rustls};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (near, far) = tokio::io::duplex(16 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let (accepted, connected) = tokio::join!(
            TlsAcceptor::from(Arc::new(server)).accept(near),
            TlsConnector::from(Arc::new(client)).connect(name, far)
        );
        let (mut to_client, mut client) = (accepted.unwrap(), connected.unwrap());

        let chunk: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 60_000];
            let read = tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got));
            read.await.map(|r| r.map(|_| got))
        });
        write_then_record(&mut to_client, &chunk, async {})
            .await
            .unwrap();
        let got = reader
            .await
            .unwrap()
            .expect("the whole chunk arrives")
            .unwrap();
        assert_eq!(got, chunk);
    }

    #[tokio::test]
    async fn a_chunk_whose_write_fails_is_recorded_all_the_same() {
        let (mut peer, taken) = FullOnce::new(usize::MAX);
        peer.fail = true;
        peer.was_full = true;
        let recorded = Arc::new(AtomicBool::new(false));
        let flag = recorded.clone();
        let result = write_then_record(&mut peer, b"a1 NOOP\r\n", async move {
            flag.store(true, Ordering::SeqCst);
        })
        .await;
        assert!(result.is_err());
        assert!(recorded.load(Ordering::SeqCst));
        assert!(taken.lock().unwrap().is_empty());
    }

    /// A lane whose thread is gone gives the sockets back (`PlainLanes::relay`), and the
    /// session is relayed by the tokio pumps instead of failing.
    #[tokio::test]
    async fn a_session_is_relayed_without_its_lane_thread() {
        use tokio::net::TcpListener;
        let lanes = Arc::new(PlainLanes::start(1).unwrap());
        lanes.stop().await;
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            s.write_all(b"* OK hi\r\n").await.unwrap();
            let mut command = Vec::new();
            while !command.ends_with(b"\r\n") {
                let mut byte = [0u8; 1];
                if s.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                command.push(byte[0]);
            }
            assert_eq!(command, b"a NOOP\r\n");
            s.write_all(b"a OK done\r\n").await.unwrap();
            let _ = s.read(&mut [0u8; 16]).await;
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(listen).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while !got.ends_with(b"* OK hi\r\n") {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"a NOOP\r\n").await.unwrap();
            while !got.ends_with(b"a OK done\r\n") {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let (accepted, from) = listener.accept().await.unwrap();
        let config = Arc::new(RelayConfig::plain(listen, &upstream.to_string(), None));
        let session = tokio::spawn(handle(
            1,
            (Instant::now(), SystemTime::now()),
            accepted,
            from,
            config,
            None,
            Some(lanes),
            CancellationToken::new(),
        ));
        let got = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("the client got its answer")
            .unwrap();
        assert_eq!(got, b"* OK hi\r\na OK done\r\n");
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session ended once the client left")
            .unwrap();
        serve.await.unwrap();
    }
}
