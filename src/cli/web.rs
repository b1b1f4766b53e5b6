//! `imapscope web`: the web view of a directory of transcripts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use imapscope::relay::shutdown_on_signals;
use imapscope::web::{WebOptions, WebServer, random_token};

#[derive(Args)]
pub struct WebArgs {
    /// Directory of transcripts (subdirectories included).
    #[arg(default_value = "recordings")]
    dir: PathBuf,
    /// Where to serve the view.
    #[arg(long, default_value = "127.0.0.1:8143", value_name = "ADDR")]
    listen: SocketAddr,
    /// Allow a non-loopback --listen address (transcripts hold people's mail).
    #[arg(long)]
    allow_remote: bool,
}

pub async fn web(args: WebArgs) -> Result<(), String> {
    super::check_listen(args.listen, args.allow_remote, "the web view")?;
    if !args.dir.is_dir() {
        return Err(format!(
            "{}: no such directory of transcripts (record some with `imapscope record`, or \
             try `imapscope demo`)",
            args.dir.display()
        ));
    }
    let shutdown = shutdown_on_signals();
    let server = start(args.dir, args.listen, shutdown).await?;
    server.wait().await;
    Ok(())
}

/// Starts the view of `dir` and says where it is: on stdout the URL alone (for scripts), in
/// the log what it shows.
pub async fn start(
    dir: PathBuf,
    listen: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<WebServer, String> {
    let options = WebOptions {
        dir: dir.clone(),
        listen,
        token: random_token(),
    };
    let server = WebServer::start(options, shutdown)
        .await
        .map_err(|e| format!("cannot serve the web view on {listen}: {e}"))?;
    tracing::info!(
        "web view of {} at {} (the token in it is needed for every request)",
        dir.display(),
        server.url
    );
    println!("{}", server.url);
    Ok(server)
}
