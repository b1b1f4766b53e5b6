//! One client connection: connect upstream, copy bytes both ways, hand copies to the recorder.
//!
//! Each direction is a pump: read what arrived, hand a reference-counted copy of the chunk to
//! the recorder, write the same bytes to the other peer. The copy is queued *before* the
//! write, so the recorder sees bytes in causal order (a server's `OK` to STARTTLS is queued
//! before the client can react to it). The queue is bounded: when the disk is slower than the
//! network, relaying slows down instead of memory growing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RelayConfig;
use super::recorder::{self, RelayEvent};
use crate::protocol::Side;
use crate::transcript::format::{EndRecord, SessionRecord};
use crate::transcript::{FORMAT_VERSION, TranscriptWriter, file_stem};

/// Bytes read at once. 64 KiB keeps syscalls few on bulk FETCH without holding much.
const READ_SIZE: usize = 64 * 1024;

/// Chunks queued for the recorder before the pumps wait (bounded memory, back-pressure).
const QUEUE_CHUNKS: usize = 64;

/// After one side closed, how long the other may go on (a server's last responses).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

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
    if let Some(path) = writer.path() {
        tracing::debug!("#{id} recording into {}", path.display());
    }
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

    let upstream = tokio::select! {
        r = tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.upstream)) => {
            match r {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", config.connect_timeout)),
            }
        }
        _ = shutdown.cancelled() => Err("imapscope is shutting down".to_string()),
    };
    let upstream = match upstream {
        Ok(s) => s,
        Err(reason) => {
            refuse(id, client, &config, &mut writer, start, &reason).await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    tracing::info!(
        "#{id} {client_addr} connected, relaying to {}",
        config.upstream
    );

    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    let recorder = tokio::spawn(recorder::run(id, rx, writer));
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let mut to_server = Box::pin(pump(
        client_read,
        upstream_write,
        Side::Client,
        tx.clone(),
        start,
    ));
    let mut to_client = Box::pin(pump(
        upstream_read,
        client_write,
        Side::Server,
        tx.clone(),
        start,
    ));

    // Run both directions until one ends, then give the other a grace period.
    // `wait_*`: that direction is still running (a finished future must not be polled again).
    let (first, wait_to_client, wait_to_server) = tokio::select! {
        end = &mut to_server => (Some(end), true, false),
        end = &mut to_client => (Some(end), false, true),
        _ = shutdown.cancelled() => (None, false, false),
    };
    let reason = match first {
        None => "imapscope shut down".to_string(),
        Some(end) => {
            let clean = end.is_clean();
            let mut reason = end.describe();
            if clean {
                let other = tokio::select! {
                    end = &mut to_client, if wait_to_client => Some(end),
                    end = &mut to_server, if wait_to_server => Some(end),
                    _ = tokio::time::sleep(CLOSE_GRACE) => None,
                    _ = shutdown.cancelled() => None,
                };
                if let Some(other) = other
                    && !other.is_clean()
                {
                    reason = format!("{reason}; then {}", other.describe());
                }
            }
            reason
        }
    };
    drop(to_server);
    drop(to_client);
    let _ = tx
        .send(RelayEvent::End {
            t_us: micros(start),
            reason: reason.clone(),
        })
        .await;
    drop(tx);
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

/// The upstream could not be reached: tell the client why and record the attempt.
async fn refuse(
    id: u64,
    mut client: TcpStream,
    config: &RelayConfig,
    writer: &mut TranscriptWriter,
    start: Instant,
    reason: &str,
) {
    let message = format!("cannot reach upstream {}: {reason}", config.upstream);
    tracing::warn!("#{id} {message}");
    let bye = format!("* BYE [UNAVAILABLE] imapscope: {message}\r\n");
    writer.error(micros(start), "upstream-connect", &message);
    writer.note(
        micros(start),
        Some(Side::Client),
        &format!("imapscope answered the client itself: {}", bye.trim_end()),
    );
    let _ = client.write_all(bye.as_bytes()).await;
    let _ = client.shutdown().await;
    writer.end(EndRecord {
        t_us: micros(start),
        reason: "upstream unreachable".into(),
        ..EndRecord::default()
    });
    if let Err(e) = writer.flush().await {
        tracing::error!("#{id} transcript write failed: {e}");
    }
}

/// How one direction ended.
enum PumpEnd {
    /// The sender closed its side.
    Eof(Side),
    ReadError(Side, std::io::Error),
    WriteError(Side, std::io::Error),
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
        }
    }
}

/// Copies what `side` sends to its peer, queueing a copy for the recorder first.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    side: Side,
    recorder: mpsc::Sender<RelayEvent>,
    start: Instant,
) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(READ_SIZE);
        match from.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return PumpEnd::Eof(side);
            }
            Ok(_) => {}
            Err(e) => {
                let _ = to.shutdown().await;
                return PumpEnd::ReadError(side, e);
            }
        }
        let chunk: Bytes = buf.split().freeze();
        // A recorder that is gone (it never panics on input, but still) must not stop the relay.
        let _ = recorder
            .send(RelayEvent::Bytes {
                side,
                t_us: micros(start),
                data: chunk.clone(),
            })
            .await;
        if let Err(e) = to.write_all(&chunk).await {
            return PumpEnd::WriteError(side, e);
        }
    }
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
