//! One client connection: TLS on either leg, connect upstream, copy bytes both ways, hand
//! copies to the recorder.
//!
//! Each direction is a pump: read what arrived, hand a reference-counted copy of the chunk to
//! the recorder, write the same bytes to the other peer. The copy is queued *before* the
//! write, so the recorder sees bytes in causal order (a server's `OK` to STARTTLS is queued
//! before the client can react to it). The queue is bounded: when the disk is slower than the
//! network, relaying slows down instead of memory growing.
//!
//! When both legs use STARTTLS, the pumps consult a [`StarttlsWatch`] and stop exactly at the
//! boundary; the connection then completes TLS with the server (verifying it), forwards the
//! server's OK, completes TLS with the client (with a minted certificate) and relays on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::RelayConfig;
use super::read_ahead::ReadAhead;
use super::recorder::{self, RelayEvent};
use super::stream::Stream;
use crate::protocol::Side;
use crate::protocol::starttls::{ClientStep, ServerStep, StarttlsWatch};
use crate::tls::{TlsMode, facts};
use crate::transcript::format::SessionRecord;
use crate::transcript::{FORMAT_VERSION, TranscriptWriter, file_stem};

/// Bytes read at once: small while a peer is quiet (an idle session holds only this), doubled
/// each time a read fills the buffer, up to the maximum that keeps syscalls few on bulk FETCH.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 256 * 1024;

/// Encrypted bytes rustls may queue on a TLS leg before a write waits (its default is 64 KiB):
/// as large as a plain read, so a bulk FETCH costs as few system calls on TLS as on TCP.
const TLS_WRITE_AHEAD: usize = READ_MAX;

/// Chunks queued for the recorder before the pumps wait (bounded memory, back-pressure).
const QUEUE_CHUNKS: usize = 64;

/// After one side closed, how long the other may go on (a server's last responses).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

const INJECTION: &str = "sent after STARTTLS and before the TLS handshake: not relayed \
                         (plaintext injection, CVE-2011-0411 class)";

/// What one connection task knows.
struct Connection {
    id: u64,
    start: Instant,
    config: Arc<RelayConfig>,
    shutdown: CancellationToken,
    recorder: mpsc::Sender<RelayEvent>,
}

/// Relays and records one connection to its end.
pub async fn handle(
    id: u64,
    client: TcpStream,
    client_addr: SocketAddr,
    config: Arc<RelayConfig>,
    shutdown: CancellationToken,
) {
    let start = Instant::now();
    let mut writer = open_writer(&config, id).await;
    writer.session(SessionRecord {
        version: FORMAT_VERSION,
        imapscope: env!("CARGO_PKG_VERSION").into(),
        id,
        client: client_addr.to_string(),
        listen: config.listen.to_string(),
        upstream: config.upstream.clone(),
        start: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        redaction: writer.redacts(),
    });
    // On disk at once, so a session shows up while the upstream is still being reached.
    if let Err(e) = writer.flush().await {
        tracing::error!("#{id} transcript write failed: {e}");
    }
    let _ = client.set_nodelay(true);
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    let recorder = tokio::spawn(recorder::run(id, rx, writer));
    let conn = Connection {
        id,
        start,
        config,
        shutdown,
        recorder: tx,
    };
    tracing::info!("#{id} {client_addr} connected");
    let reason = conn.run(client).await;
    let _ = conn
        .recorder
        .send(RelayEvent::End {
            t_us: conn.micros(),
            reason: reason.clone(),
        })
        .await;
    drop(conn);
    match recorder.await {
        Ok(Some(path)) => tracing::info!("#{id} closed: {reason}; transcript {}", path.display()),
        Ok(None) => tracing::info!("#{id} closed: {reason}"),
        Err(e) => tracing::error!("#{id} recorder failed: {e}"),
    }
}

/// Opens the transcript file; if that fails the session is still relayed, unrecorded, and
/// the reason is logged.
async fn open_writer(config: &RelayConfig, id: u64) -> TranscriptWriter {
    let Some(dir) = &config.out else {
        return TranscriptWriter::discard();
    };
    let stem = file_stem(SystemTime::now(), id);
    let mut last_error = None;
    for attempt in 0..10 {
        let name = if attempt == 0 {
            stem.clone()
        } else {
            format!("{stem}.{attempt}")
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
    fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    async fn tell(&self, event: RelayEvent) {
        // A recorder that is gone must not stop the relay.
        let _ = self.recorder.send(event).await;
    }

    async fn error(&self, during: &str, message: &str) {
        self.tell(RelayEvent::Error {
            t_us: self.micros(),
            during: during.to_string(),
            message: message.to_string(),
        })
        .await;
    }

    /// The whole life of the connection; returns why it ended.
    async fn run(&self, client: TcpStream) -> String {
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
                    Err(_) => Err(format!("no answer within {:?}", self.config.connect_timeout)),
                }
            }
            _ = self.shutdown.cancelled() => Err("imapscope is shutting down".to_string()),
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
        let mut upstream = match self.config.upstream_tls {
            TlsMode::Tls => match self.connect_tls(upstream).await {
                Ok(s) => s,
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
                        Err(message) => {
                            let mut down = Stream::Plain(down);
                            self.tell(RelayEvent::Note {
                                t_us: self.micros(),
                                side: Some(Side::Server),
                                text: "the server's OK to STARTTLS was not relayed: the upstream \
                                       handshake failed"
                                    .into(),
                            })
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

    /// Tells the client why there will be no session, as IMAP does: an untagged BYE.
    async fn refuse(&self, client: &mut Stream, message: &str) {
        tracing::warn!("#{} {message}", self.id);
        let bye = format!("* BYE [UNAVAILABLE] imapscope: {message}\r\n");
        self.tell(RelayEvent::Note {
            t_us: self.micros(),
            side: Some(Side::Client),
            text: format!("imapscope answered the client itself: {}", bye.trim_end()),
        })
        .await;
        let _ = client.write_all(bye.as_bytes()).await;
        let _ = client.shutdown().await;
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
            _ = self.shutdown.cancelled() => return Err("imapscope shut down".into()),
        };
        match result {
            Ok(Ok(mut tls)) => {
                tls.get_mut().1.set_buffer_limit(Some(TLS_WRITE_AHEAD));
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
                self.tell(RelayEvent::Tls(record)).await;
                Ok(Stream::TlsToClient(Box::new(tls)))
            }
            Ok(Err(e)) => {
                let message = format!(
                    "TLS handshake with the client failed: {e}{}",
                    if e.to_string().contains("alert") {
                        " (does the client trust imapscope's CA? see `imapscope ca show`)"
                    } else {
                        ""
                    }
                );
                tracing::warn!("#{} {message}", self.id);
                self.error("client-tls-handshake", &message).await;
                Err("client TLS handshake failed".into())
            }
            Err(_) => {
                let message = format!(
                    "TLS handshake with the client did not finish within {:?}",
                    self.config.connect_timeout
                );
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
                    "upstream host {:?} is not a valid TLS name: {e}",
                    setup.upstream_host
                );
                self.error("upstream-tls-handshake", &message).await;
                return Err(message);
            }
        };
        let connector = tokio_rustls::TlsConnector::from(upstream_leg.clone());
        let handshake = tokio::time::timeout(
            self.config.connect_timeout,
            connector.connect(name, ReadAhead::new(tcp)),
        );
        let result = tokio::select! {
            r = handshake => r,
            _ = self.shutdown.cancelled() => return Err("imapscope is shutting down".into()),
        };
        match result {
            Ok(Ok(mut tls)) => {
                tls.get_mut().1.set_buffer_limit(Some(TLS_WRITE_AHEAD));
                let (_, conn) = tls.get_ref();
                let sni = matches!(
                    ServerName::try_from(setup.upstream_host.as_str()),
                    Ok(ServerName::DnsName(_))
                )
                .then_some(setup.upstream_host.as_str());
                let record = facts(
                    "upstream",
                    self.micros(),
                    conn,
                    sni,
                    conn.peer_certificates().and_then(|c| c.first()),
                );
                tracing::info!(
                    "#{} upstream TLS: {} {}, certificate {}",
                    self.id,
                    record.version,
                    record.cipher,
                    record.subject.as_deref().unwrap_or("?")
                );
                self.tell(RelayEvent::Tls(record)).await;
                Ok(Stream::TlsToServer(Box::new(tls)))
            }
            Ok(Err(e)) => {
                let message = format!(
                    "TLS handshake with upstream {} failed: {e}",
                    self.config.upstream
                );
                self.error("upstream-tls-handshake", &message).await;
                Err(message)
            }
            Err(_) => {
                let message = format!(
                    "TLS handshake with upstream {} did not finish within {:?}",
                    self.config.upstream, self.config.connect_timeout
                );
                self.error("upstream-tls-handshake", &message).await;
                Err(message)
            }
        }
    }

    /// Relays until the connection ends, or until both legs agreed to STARTTLS.
    async fn relay(&self, client: &mut Stream, upstream: &mut Stream, starttls: bool) -> Phase {
        let (client_read, client_write) = tokio::io::split(client);
        let (upstream_read, upstream_write) = tokio::io::split(upstream);
        let gate = starttls.then(|| Gate {
            watch: Mutex::new(StarttlsWatch::new()),
            verdict: watch::channel(None).0,
        });
        let mut to_server =
            Box::pin(self.pump(client_read, upstream_write, Side::Client, gate.as_ref()));
        let mut to_client =
            Box::pin(self.pump(upstream_read, client_write, Side::Server, gate.as_ref()));

        // `wait_*`: that direction is still running (a finished future must not be polled again).
        let (first, wait_to_client, wait_to_server) = tokio::select! {
            end = &mut to_server => (Some(end), true, false),
            end = &mut to_client => (Some(end), false, true),
            _ = self.shutdown.cancelled() => (None, false, false),
        };
        let Some(first) = first else {
            return Phase::Closed("imapscope shut down".into());
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
        let mut reason = first.describe();
        if first.is_clean() {
            let other = tokio::select! {
                end = &mut to_client, if wait_to_client => Some(end),
                end = &mut to_server, if wait_to_server => Some(end),
                _ = tokio::time::sleep(CLOSE_GRACE) => None,
                _ = self.shutdown.cancelled() => None,
            };
            if let Some(other) = other
                && !other.is_clean()
            {
                reason = format!("{reason}; then {}", other.describe());
            }
        }
        Phase::Closed(reason)
    }

    /// Copies what `side` sends to its peer, queueing a copy for the recorder first.
    async fn pump<R, W>(&self, mut from: R, mut to: W, side: Side, gate: Option<&Gate>) -> PumpEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::new();
        let mut size = READ_MIN;
        loop {
            buf.reserve(size);
            match from.read_buf(&mut buf).await {
                Ok(0) => {
                    let _ = to.shutdown().await;
                    return PumpEnd::Eof(side);
                }
                Ok(n) if n >= size => size = (size * 2).min(READ_MAX),
                Ok(n) if n < size / 8 => size = (size / 2).max(READ_MIN),
                Ok(_) => {}
                Err(e) => {
                    let _ = to.shutdown().await;
                    return PumpEnd::ReadError(side, e);
                }
            }
            let t_us = self.micros();
            let mut chunk: Bytes = buf.split().freeze();
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
            if !chunk.is_empty() {
                self.tell(RelayEvent::Bytes {
                    side,
                    t_us,
                    data: chunk.clone(),
                })
                .await;
                if let Err(e) = to.write_all(&chunk).await {
                    return PumpEnd::WriteError(side, e);
                }
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
        self.tell(RelayEvent::Dropped {
            side,
            t_us,
            data,
            reason: INJECTION.into(),
        })
        .await;
    }
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

/// How one direction ended.
enum PumpEnd {
    /// The sender closed its side.
    Eof(Side),
    ReadError(Side, std::io::Error),
    WriteError(Side, std::io::Error),
    /// Stopped at the STARTTLS boundary; the server's pump carries the held OK.
    Upgrade(Option<Bytes>),
}

impl PumpEnd {
    fn is_clean(&self) -> bool {
        matches!(self, PumpEnd::Eof(_))
    }

    fn describe(&self) -> String {
        match self {
            PumpEnd::Eof(side) => format!("{} closed", side.as_str()),
            PumpEnd::ReadError(side, e) => format!("reading from {} failed: {e}", side.as_str()),
            PumpEnd::WriteError(side, e) => {
                format!("writing to {} failed: {e}", side.peer().as_str())
            }
            PumpEnd::Upgrade(_) => "STARTTLS".into(),
        }
    }
}
