//! `imapscope replay`: a capture's client side against a live server, diffed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use imapscope::tls::TlsMode;

#[derive(Args)]
pub struct ReplayArgs {
    /// The capture to replay: transcript files, directories of them, or glob patterns. Each
    /// session runs on its own connection, in the order the sessions started.
    #[arg(required = true, value_name = "CAPTURE")]
    transcripts: Vec<PathBuf>,
    /// The server to replay against, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = super::host_port)]
    upstream: String,
    /// How to start each connection: none or tls. Default: as each recording did (STARTTLS is
    /// played as the recorded command it is).
    #[arg(long, value_enum, value_name = "MODE")]
    upstream_tls: Option<TlsMode>,
    /// Run the sessions at once, each starting at its recorded offset from the first, as the
    /// client opened them, and each sending its commands no sooner than it did: what one
    /// connection saw because of another (a push, a message another moved into a folder) is
    /// then reproduced. The run takes as long as the recording.
    #[arg(long)]
    concurrent: bool,
    #[command(flatten)]
    trust: super::TrustArgs,
    /// Credentials for recordings whose LOGIN/AUTHENTICATE were redacted (else IMAPSCOPE_LOGIN).
    /// Repeat it for sessions of several users: each session uses its recorded user's. One
    /// alone is used for every session, whichever user it recorded.
    #[arg(long, value_name = "USER:PASS")]
    login: Vec<String>,
    /// Bearer token for recordings that logged in with XOAUTH2 or OAUTHBEARER (with --login
    /// for the user name).
    #[arg(
        long,
        env = "IMAPSCOPE_OAUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    oauth_token: Option<String>,
    /// Tolerate untagged responses the recording does not have.
    #[arg(long)]
    allow_extra: bool,
    /// Seconds to wait for any one expected answer.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    timeout: u64,
    /// One JSON object per transcript on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// Exit status: 0 all matched, 1 a difference, 2 unusable input, 3 the server could not be
/// reached (and nothing else differed).
pub async fn replay(args: ReplayArgs, verbose: bool) -> ExitCode {
    use imapscope::replay::{Capture, Extras, Login, ReplayOptions};
    let unusable = |message: String| {
        eprintln!("imapscope: {message}");
        ExitCode::from(2)
    };
    let mut logins = Vec::new();
    for text in &args.login {
        match Login::parse(text) {
            Some(l) => logins.push(l),
            None => return unusable("--login takes USER:PASS".into()),
        }
    }
    if logins.is_empty() {
        logins.extend(Login::from_env());
    }
    for login in &mut logins {
        login.token = args.oauth_token.clone();
    }
    let tls_config = match args.trust.trust().and_then(|t| t.config()) {
        Ok(c) => Some(c),
        Err(e) => return unusable(format!("upstream TLS configuration: {e}")),
    };
    let options = ReplayOptions {
        upstream: args.upstream.clone(),
        tls: args.upstream_tls,
        tls_config,
        extras: if args.allow_extra {
            Extras::Allow
        } else {
            Extras::Forbid
        },
        timeout: Duration::from_secs(args.timeout),
        paced: args.concurrent,
    };
    // Read everything first: unusable input stops the run before any traffic.
    let capture = match Capture::load(&args.transcripts) {
        Ok(c) => c,
        Err(e) => return unusable(e.to_string()),
    };
    for note in &capture.skipped {
        eprintln!("imapscope: {note}");
    }
    let capture = match capture.with_login(&logins) {
        Ok(c) => c,
        Err(e) => return unusable(e.to_string()),
    };
    let reports = imapscope::replay::replay_capture(&capture, &options, args.concurrent).await;
    let mut all_ok = true;
    let mut unreachable = false;
    let mut shown = imapscope::replay::ShownDifferences::default();
    for report in &reports {
        all_ok &= report.ok() || report.unreachable;
        unreachable |= report.unreachable;
        if args.json {
            super::print_report(&format!("{}\n", report.to_json()));
        } else {
            super::print_report(&report.render_folded(verbose, &mut shown));
        }
    }
    if !all_ok && !args.concurrent && capture.overlapping() {
        eprintln!(
            "imapscope: the recorded sessions were open at the same time, and were replayed one \
             after the other: what one did to a mailbox may have shown in another where the \
             recording has it not. Replay with --concurrent to play them as they ran."
        );
    }
    match (all_ok, unreachable) {
        (false, _) => ExitCode::from(1),
        (true, true) => ExitCode::from(3),
        (true, false) => ExitCode::SUCCESS,
    }
}
