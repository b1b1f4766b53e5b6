//! The web view: a local page showing the transcripts of a directory, live (mitmweb for IMAP).
//!
//! `imapscope web DIR` and `imapscope record --web ADDR` serve it. Transcripts hold people's
//! mail, so the server is careful before it is useful: it listens on loopback unless told
//! otherwise, every request needs the random token printed at start, only `.jsonl` files
//! under DIR are ever read, and nothing can be changed. The page (`assets/`) is embedded in
//! the binary and needs no network. docs/web.md is the contract between the two.
//!
//! The server only reads files, so it works the same for a live recording (the relay's
//! transcript writer is the one writer; the view follows the files it writes) and for an old
//! directory. [`index`] lists sessions, [`session`] shows one, [`query`] answers questions
//! across them, [`lines`] reads transcripts cheaply, [`routes`] is the HTTP side.

pub mod index;
pub mod lines;
pub mod query;
pub mod routes;
pub mod session;

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// What the web view serves, and where.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// The directory of transcripts.
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// The token every request must carry; [`random_token`] by default.
    pub token: String,
}

/// 32 random hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness there is no secret to protect the view with: the clock and the
    // process id at least keep two runs apart, and the failure is logged.
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::warn!("no system randomness for the web token ({e}); using a weaker one");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (t ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running web view.
pub struct WebServer {
    pub addr: SocketAddr,
    /// The URL to open, token included.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    /// Binds `options.listen` and serves until `shutdown` is cancelled.
    pub async fn start(
        options: WebOptions,
        shutdown: CancellationToken,
    ) -> std::io::Result<WebServer> {
        let listener = tokio::net::TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let host = match addr {
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
            SocketAddr::V4(a) => a.ip().to_string(),
        };
        let url = format!("http://{host}:{}/?token={}", addr.port(), options.token);
        let app = routes::router(options, shutdown.clone());
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("web view stopped: {e}");
            }
        });
        Ok(WebServer { addr, url, task })
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
