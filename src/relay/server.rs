//! The accept loop and graceful shutdown, done once for every connection.
//!
//! On shutdown the loop stops accepting, every connection is told to stop, and [`RelayServer::run`]
//! returns only when each one has written its transcript's closing line. The threads the relay
//! runs on (the lanes, the transcript thread) start and stop here too.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lanes::Lanes;
use super::plain_lane::PlainLanes;
use super::transcript_thread::TranscriptThread;
use super::{RelayConfig, connection};

/// A bound listener plus what each connection needs.
pub struct RelayServer {
    listener: TcpListener,
    config: Arc<RelayConfig>,
}

impl RelayServer {
    /// Binds the listening socket (so callers can learn the port before running), and makes
    /// sure the transcript directory exists and is private (see [`crate::private_dir`]).
    pub async fn bind(mut config: RelayConfig) -> io::Result<RelayServer> {
        if let Some(dir) = &config.out {
            crate::private_dir::ensure(dir)?;
        }
        let listener = TcpListener::bind(config.listen).await?;
        config.listen = listener.local_addr()?;
        Ok(RelayServer {
            listener,
            config: Arc::new(config),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// Accepts until `shutdown` fires, then waits for every connection to finish.
    /// Connections run on [`Lanes`], one thread per core.
    pub async fn run(self, shutdown: CancellationToken) {
        let lanes = match Lanes::per_core() {
            Ok(lanes) => Some(lanes),
            Err(e) => {
                tracing::warn!("cannot start a thread per core ({e}); connections share one");
                None
            }
        };
        let transcripts = match &self.config.out {
            None => None,
            Some(_) => match TranscriptThread::start() {
                Ok(thread) => Some(Arc::new(thread)),
                Err(e) => {
                    tracing::error!(
                        "cannot start the transcript thread ({e}): nothing is recorded"
                    );
                    None
                }
            },
        };
        let plain_lanes = match PlainLanes::per_core() {
            Ok(lanes) => Some(Arc::new(lanes)),
            Err(e) => {
                tracing::warn!("cannot start the plain relay threads ({e}); tokio relays all");
                None
            }
        };
        let tasks = TaskTracker::new();
        let mut next_id = 0u64;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, addr)) => {
                    next_id += 1;
                    let id = next_id;
                    // Taken here, with the id: a session's start time then follows the order
                    // of the ids, whichever task gets to run first.
                    let accepted_at = (std::time::Instant::now(), std::time::SystemTime::now());
                    let (config, transcripts, plain, shutdown) = (
                        self.config.clone(),
                        transcripts.clone(),
                        plain_lanes.clone(),
                        shutdown.clone(),
                    );
                    let relay = move |socket| {
                        connection::handle(
                            id,
                            accepted_at,
                            socket,
                            addr,
                            config,
                            transcripts,
                            plain,
                            shutdown,
                        )
                    };
                    let Some(lanes) = &lanes else {
                        tasks.spawn(relay(socket));
                        continue;
                    };
                    // The socket moves to the lane's own I/O driver.
                    let socket = match socket.into_std() {
                        Ok(socket) => socket,
                        Err(e) => {
                            tracing::warn!("#{id} {addr}: cannot hand the connection on: {e}");
                            continue;
                        }
                    };
                    let (lane, seat) = lanes.choose();
                    tasks.spawn_on(
                        async move {
                            let _seat = seat;
                            match TcpStream::from_std(socket) {
                                Ok(socket) => relay(socket).await,
                                Err(e) => tracing::warn!(
                                    "#{id} {addr}: cannot hand the connection on: {e}"
                                ),
                            }
                        },
                        &lane,
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(self.listener);
        tasks.close();
        if !tasks.is_empty() {
            tracing::info!("closing {} open connection(s)", tasks.len());
        }
        tasks.wait().await;
        if let Some(transcripts) = transcripts {
            transcripts.stop().await;
        }
        if let Some(lanes) = lanes {
            lanes.stop().await;
        }
        if let Some(lanes) = plain_lanes {
            lanes.stop().await;
        }
    }
}

/// A token cancelled on Ctrl-C, SIGTERM or SIGHUP (the terminal or SSH session imapscope
/// runs in went away: every transcript still gets its end line). Under `nohup`, which
/// ignores SIGHUP, it stays ignored.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    #[cfg(unix)]
    let hangup = (!hangup_ignored())
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
        .flatten();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let hung_up = async {
                match hangup {
                    Some(mut hup) => {
                        hup.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                        _ = hung_up => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: no new connections, closing open ones");
        fire.cancel();
    });
    token
}

/// Whether SIGHUP is ignored (`nohup`), asked before anything handles it.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`, a
    // zeroed local that lives for the call.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}
