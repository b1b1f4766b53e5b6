//! `imapscope demo`: something to look at with no mail server at hand.
//!
//! A fake server plays the golden recordings (embedded in the binary), imapscope records in
//! front of it, a scripted client replays the same sessions through the relay every few
//! seconds, and the web view shows the transcripts as they are written. Every part is the
//! real one a user runs: `serve`, `record`, `replay` and `web`, wired together in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use imapscope::relay::{RelayConfig, RelayServer, shutdown_on_signals};
use imapscope::replay::{FakeServer, Login, ReplayOptions, Script, ServeOptions};
use imapscope::transcript::reader::parse_transcript;

/// The recordings the demo plays: real Dovecot sessions from `recordings/golden/`.
const GOLDEN: &[(&str, &str)] = &[
    (
        "login-select.jsonl",
        include_str!("../../recordings/golden/login-select.jsonl"),
    ),
    (
        "search-fetch.jsonl",
        include_str!("../../recordings/golden/search-fetch.jsonl"),
    ),
    (
        "append.jsonl",
        include_str!("../../recordings/golden/append.jsonl"),
    ),
    (
        "store-copy-move-expunge.jsonl",
        include_str!("../../recordings/golden/store-copy-move-expunge.jsonl"),
    ),
    (
        "errors.jsonl",
        include_str!("../../recordings/golden/errors.jsonl"),
    ),
    (
        "curl-fetch.jsonl",
        include_str!("../../recordings/golden/curl-fetch.jsonl"),
    ),
];

#[derive(Args)]
pub struct DemoArgs {
    /// Where to serve the web view.
    #[arg(long, default_value = "127.0.0.1:8143", value_name = "ADDR")]
    web: SocketAddr,
    /// Seconds between two runs of the scripted client.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    every: u64,
    /// Keep the demo's transcripts in this directory (default: a temporary one, removed at
    /// the end).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub async fn demo(args: DemoArgs) -> Result<(), String> {
    super::check_listen(args.web, false, "the web view")?;
    let shutdown = shutdown_on_signals();
    let scripts = golden()?;

    // The server side of the recordings, answering whoever connects.
    let serve = ServeOptions {
        rounds: 0,
        ..ServeOptions::default()
    };
    let fake = FakeServer::from_scripts(scripts.clone(), serve)
        .await
        .map_err(|e| format!("the demo's fake server: {e}"))?;

    // imapscope in front of it, recording.
    let (dir, temporary) = match args.out {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("imapscope-demo-{}", std::process::id())),
            true,
        ),
    };
    imapscope::private_dir::ensure(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let config = RelayConfig::plain(listen, &fake.addr().to_string(), Some(dir.clone()));
    let relay = RelayServer::bind(config)
        .await
        .map_err(|e| format!("the demo's relay: {e}"))?;
    let relay_addr = relay.local_addr();
    let relaying = tokio::spawn(relay.run(shutdown.clone()));

    let web = super::web::start(dir.clone(), args.web, shutdown.clone()).await?;
    eprintln!(
        "\nimapscope demo: a fake IMAP server plays {} recorded sessions, imapscope records \
         them at {relay_addr}, and a scripted client runs them every {} s.\nOpen {}\n\
         (Ctrl-C ends the demo{}.)\n",
        scripts.len(),
        args.every,
        web.url,
        if temporary {
            format!("; its transcripts in {} go with it", dir.display())
        } else {
            String::new()
        }
    );

    // The scripted client: the same sessions, through the relay, over and over.
    let login = Login {
        user: "nell".into(),
        password: "demo".into(),
        token: None,
    };
    let client: Vec<Script> = scripts
        .into_iter()
        .map(|s| s.with_login(std::slice::from_ref(&login)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let options = ReplayOptions::plain(&relay_addr.to_string());
    let mut round = 0u64;
    'run: loop {
        round += 1;
        for script in &client {
            let report = tokio::select! {
                r = imapscope::replay::replay(script, &options) => r,
                _ = shutdown.cancelled() => break 'run,
            };
            if !report.ok() {
                tracing::warn!("demo round {round}: {}", report.render(false).trim_end());
            }
        }
        tracing::info!("demo round {round}: {} sessions recorded", client.len());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.every)) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    fake.stop_handle().cancel();
    let _ = relaying.await;
    web.wait().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// The embedded recordings as scripts.
fn golden() -> Result<Vec<Script>, String> {
    GOLDEN
        .iter()
        .map(|(name, text)| {
            let transcript = parse_transcript(text.as_bytes(), name).map_err(|e| e.to_string())?;
            Script::from_transcript(name, &transcript).map_err(|e| e.to_string())
        })
        .collect()
}
