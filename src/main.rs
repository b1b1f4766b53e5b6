//! The `imapscope` command line: turns options into the library's pieces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use imapscope::relay::{RelayConfig, RelayServer, shutdown_on_signals};

#[derive(Parser)]
#[command(
    name = "imapscope",
    version,
    about = "An IMAP relay that records annotated, replayable transcripts",
    long_about = "imapscope sits between an IMAP client and an IMAP server, relays every byte \
                  both ways unchanged, follows the tagged exchange and writes one annotated \
                  JSON Lines transcript per connection, with credentials redacted.",
    after_help = "Example:\n  imapscope record --upstream imap.example.com:143\n  \
                  # then point the mail client at 127.0.0.1:1143; transcripts land in recordings/"
)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output: warnings and errors only (no per-command lines).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Relay clients to an IMAP server and record one transcript per connection.
    #[command(after_help = "Examples:\n  \
        imapscope record --upstream 127.0.0.1:143\n  \
        imapscope record --upstream mail.example.com:143 --listen 127.0.0.1:2143 --out /tmp/rec\n  \
        imapscope record --upstream 127.0.0.1:143 --out none     # relay and log, keep no transcript\n\n\
        Each completed command is logged on stderr as\n  #3 A2 SELECT INBOX -> OK 0.41 ms\n\
        (connection, tag, command, status, latency). Ctrl-C or SIGTERM stops accepting, closes\n\
        every transcript with an end line, and exits 0.")]
    Record(RecordArgs),
}

#[derive(Args)]
struct RecordArgs {
    /// The real IMAP server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:1143", value_name = "ADDR")]
    listen: SocketAddr,
    /// Directory for transcripts (created, owner-only), or `none` to keep no transcript.
    #[arg(long, default_value = "recordings", value_name = "DIR")]
    out: String,
    /// Write LOGIN passwords and SASL payloads to transcripts instead of `<redacted>`.
    #[arg(long)]
    record_secrets: bool,
    /// Allow listening on a non-loopback address (anyone who can reach it can use the relay).
    #[arg(long)]
    allow_remote: bool,
    /// Seconds to wait for the upstream to accept a connection.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    connect_timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("imapscope: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Record(args) => runtime.block_on(record(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("imapscope: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

async fn record(args: RecordArgs) -> Result<(), String> {
    if !args.listen.ip().is_loopback() {
        if !args.allow_remote {
            return Err(format!(
                "refusing to listen on {}, which is not a loopback address: anyone who can \
                 reach it could relay through imapscope and read the transcripts' subjects. \
                 Pass --allow-remote if that is what you want.",
                args.listen
            ));
        }
        tracing::warn!(
            "listening on non-loopback {}: anyone who can reach it can use this relay",
            args.listen
        );
    }
    let out = (args.out != "none").then(|| PathBuf::from(&args.out));
    let config = RelayConfig {
        listen: args.listen,
        upstream: args.upstream.clone(),
        out: out.clone(),
        redact: !args.record_secrets,
        connect_timeout: Duration::from_secs(args.connect_timeout),
    };
    let server = RelayServer::bind(config)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    if args.record_secrets {
        tracing::warn!("--record-secrets: passwords and SASL payloads will be written to disk");
    }
    tracing::info!(
        "listening on {}, relaying to {}, {}",
        server.local_addr(),
        args.upstream,
        match &out {
            Some(dir) => format!("transcripts in {}", dir.display()),
            None => "not recording (--out none)".to_string(),
        }
    );
    let shutdown = shutdown_on_signals();
    server.run(shutdown).await;
    Ok(())
}
