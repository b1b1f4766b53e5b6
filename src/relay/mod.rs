//! The async shell around the protocol core: sockets, tasks, shutdown.
//!
//! [`server`] accepts clients and runs one [`connection`] task each, on one of the [`lanes`]
//! (a thread per core); a connection copies bytes
//! between client and upstream, follows them with a [`recorder`] (the session tracker) and,
//! when the session is recorded, hands the events to the [`transcript_thread`], which owns
//! every session's transcript writer.
//! Nothing here parses IMAP: that is [`crate::protocol`]'s job.

pub mod connection;
pub mod lanes;
pub mod plain_lane;
pub mod read_ahead;
pub mod recorder;
pub mod server;
pub mod stream;
pub mod transcript_thread;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::{Authority, TlsMode};

pub use server::{RelayServer, shutdown_on_signals};

/// What a relay needs to know, fixed at start: the client never chooses the upstream.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// `HOST:PORT` of the real server.
    pub upstream: String,
    /// Directory for transcripts; `None` records nothing (`--out none`).
    pub out: Option<PathBuf>,
    /// Hide credentials in transcripts (the default).
    pub redact: bool,
    /// How long to wait for the upstream to accept, and for each TLS handshake.
    pub connect_timeout: Duration,
    pub client_tls: TlsMode,
    pub upstream_tls: TlsMode,
    pub tls: TlsSetup,
}

impl RelayConfig {
    /// A plain-TCP relay with default timeouts.
    pub fn plain(listen: SocketAddr, upstream: &str, out: Option<PathBuf>) -> RelayConfig {
        RelayConfig {
            listen,
            upstream: upstream.to_string(),
            out,
            redact: true,
            connect_timeout: Duration::from_secs(10),
            client_tls: TlsMode::None,
            upstream_tls: TlsMode::None,
            tls: TlsSetup {
                upstream_host: crate::tls::host_of(upstream).to_string(),
                client_leg: None,
                upstream_leg: None,
            },
        }
    }
}

/// What TLS interception needs, built once at start.
#[derive(Clone)]
pub struct TlsSetup {
    /// SNI towards the server, and the certificate name for clients that send no SNI.
    pub upstream_host: String,
    /// Present when the client leg uses TLS (implicit or STARTTLS).
    pub client_leg: Option<ClientLeg>,
    /// Present when the upstream leg uses TLS.
    pub upstream_leg: Option<UpstreamLeg>,
}

/// imapscope as the TLS client of the server.
#[derive(Clone)]
pub struct UpstreamLeg {
    pub config: Arc<rustls::ClientConfig>,
    /// Whom the config trusts, to say in the transcript how a certificate was accepted.
    pub trust: crate::tls::UpstreamTrust,
}

impl UpstreamLeg {
    pub fn new(
        trust: crate::tls::UpstreamTrust,
    ) -> Result<UpstreamLeg, crate::tls::UpstreamTlsError> {
        Ok(UpstreamLeg {
            config: trust.config()?,
            trust,
        })
    }
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("upstream_host", &self.upstream_host)
            .field("client_leg", &self.client_leg.is_some())
            .field("upstream_leg", &self.upstream_leg.is_some())
            .finish()
    }
}

/// imapscope as the TLS server facing clients.
#[derive(Clone)]
pub struct ClientLeg {
    pub authority: Arc<Authority>,
    pub config: Arc<rustls::ServerConfig>,
}
