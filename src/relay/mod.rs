//! The async shell around the protocol core: sockets, tasks, shutdown.
//!
//! [`server`] accepts clients and runs one [`connection`] task each; a connection copies bytes
//! between client and upstream and feeds a [`recorder`] task that owns the session tracker and
//! the transcript writer. Nothing here parses IMAP: that is [`crate::protocol`]'s job.

pub mod connection;
pub mod recorder;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// How long to wait for the upstream to accept.
    pub connect_timeout: Duration,
}
