//! `imapscope serve`: a capture's server side for a client under test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use imapscope::relay::shutdown_on_signals;
use imapscope::tls::{self, Authority, TlsMode};

#[derive(Args)]
pub struct ServeArgs {
    /// The capture to play: transcript files, directories of them, or glob patterns. Each
    /// client connection plays the unused recording whose exchange it follows.
    #[arg(required = true, value_name = "CAPTURE")]
    transcripts: Vec<PathBuf>,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:1143", value_name = "ADDR")]
    listen: SocketAddr,
    /// TLS towards the client from its first byte (tls) or not (none), with certificates from
    /// imapscope's CA. Default: as the capture was recorded; STARTTLS is played where recorded.
    #[arg(long, value_enum, value_name = "MODE")]
    client_tls: Option<TlsMode>,
    /// Serve the whole capture this many times (a client run again and again), then exit;
    /// 0: until stopped.
    #[arg(long, default_value_t = 1, value_name = "N")]
    rounds: usize,
    /// Once every connection has closed with recorded commands still unasked: seconds to wait
    /// for the client to come back before the round ends as incomplete.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    linger: f64,
    /// How closely a command must resemble the recorded one.
    #[arg(
        long = "match",
        value_enum,
        default_value = "strict",
        value_name = "MODE"
    )]
    match_mode: imapscope::replay::MatchMode,
    /// Play IDLE pushes (and, with --latency recorded, every answer) this many times faster
    /// than recorded.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    speed: f64,
    /// When to answer: `none` at once, `recorded` after the time the recorded server took
    /// (for a client whose path depends on timing, as Geary's does).
    #[arg(long, value_enum, default_value = "none", value_name = "WHEN")]
    latency: Latency,
    /// Directory of imapscope's CA (for --client-tls).
    #[arg(long, default_value = "certs", value_name = "DIR")]
    certs: PathBuf,
    /// The password a SCRAM login is answered with, as USER:PASSWORD (or IMAPSCOPE_LOGIN): a
    /// SCRAM client checks the server's proof of it, which no recording holds. Other logins
    /// are played as recorded, whatever the password.
    #[arg(long, value_name = "USER:PASSWORD")]
    login: Option<String>,
}

/// `--latency`: how soon serve answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Latency {
    /// At once.
    None,
    /// After the time the recorded server took.
    Recorded,
}

/// Exit status: 0 every recording used fully and exactly, 1 otherwise, 2 unusable input.
pub async fn serve(args: ServeArgs) -> ExitCode {
    use imapscope::replay::serve::needs_tls;
    use imapscope::replay::{Capture, FakeServer, ServeOptions};
    let unusable = |message: String| {
        eprintln!("imapscope: {message}");
        ExitCode::from(2)
    };
    let capture = match Capture::load(&args.transcripts) {
        Ok(c) => c,
        Err(e) => return unusable(e.to_string()),
    };
    for note in &capture.skipped {
        eprintln!("imapscope: {note}");
    }
    let mut options = ServeOptions {
        listen: args.listen,
        mode: args.match_mode,
        speed: args.speed,
        client_tls: args.client_tls,
        tls: None,
        rounds: args.rounds,
        linger: Duration::from_secs_f64(args.linger.max(0.0)),
        recorded_latency: args.latency == Latency::Recorded,
        login: match &args.login {
            Some(text) => match imapscope::replay::Login::parse(text) {
                Some(login) => Some(login),
                None => return unusable("--login takes USER:PASSWORD".into()),
            },
            None => imapscope::replay::Login::from_env(),
        },
    };
    if needs_tls(&capture.scripts, &options) {
        let authority = match Authority::ensure(&args.certs) {
            Ok((a, _)) => Arc::new(a),
            Err(e) => return unusable(e.to_string()),
        };
        let name = imapscope::replay::serve::certificate_name(&capture.scripts, options.listen);
        match tls::client_leg_config(authority, &name) {
            Ok(c) => options.tls = Some(c),
            Err(e) => return unusable(format!("client TLS configuration: {e}")),
        }
    }
    let recordings = capture.scripts.len();
    let server = match FakeServer::from_capture(capture, options).await {
        Ok(s) => s,
        Err(e) => return unusable(e.to_string()),
    };
    tracing::info!("serving {recordings} recording(s) on {}", server.addr());
    // Stopped by a signal: open sessions end, and what was served is reported.
    let signals = shutdown_on_signals();
    let stop = server.stop_handle();
    let stopped = signals.clone();
    tokio::spawn(async move {
        stopped.cancelled().await;
        stop.cancel();
    });
    let report = server.wait().await;
    let interrupted = signals.is_cancelled();
    super::print_report(&report.render());
    if report.ok() && (!interrupted || args.rounds == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
