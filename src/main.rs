//! The `imapscope` command line: turns options into the library's pieces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use imapscope::relay::{
    ClientLeg, RelayConfig, RelayServer, TlsSetup, UpstreamLeg, shutdown_on_signals,
};
use imapscope::tls::{self, Authority, Created, TlsMode};

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
        imapscope record --upstream 127.0.0.1:143 --out none     # relay and log, keep no transcript\n  \
        imapscope record --upstream imap.example.com:993          # TLS both legs (993 implies it)\n  \
        imapscope record --upstream 127.0.0.1:143 --client-tls starttls --upstream-ca server.pem\n  \
        imapscope record --upstream imap.example.com:993 --client-tls none   # plain client, TLS server\n\n\
        Each completed command is logged on stderr as\n  #3 A2 SELECT INBOX -> OK 0.41 ms\n\
        (connection, tag, command, status, latency). Ctrl-C or SIGTERM stops accepting, closes\n\
        every transcript with an end line, and exits 0.")]
    Record(RecordArgs),
    /// Replay recorded sessions against a live server and diff its answers.
    #[command(after_help = "Examples:\n  \
        imapscope replay recordings/golden/*.jsonl --upstream 127.0.0.1:143 --login nell:secret\n  \
        IMAPSCOPE_LOGIN=nell:secret imapscope replay session.jsonl --upstream imap.example.com:993 --json\n\n\
        Matching follows Dovecot's imaptest: tags map, untagged responses of a command may come\n\
        in any order, completions match on status and response code (not text), UIDVALIDITY,\n\
        UIDNEXT, HIGHESTMODSEQ, MODSEQ, INTERNALDATE and greeting/ID texts are variables bound\n\
        on first sight, FETCH items may come in any order, FLAGS are sets without \\Recent.\n\
        Exit status: 0 all matched, 1 a difference, 2 unusable input.")]
    Replay(ReplayArgs),
    /// Play recorded sessions' server side to a client under test: a fake IMAP server.
    #[command(after_help = "Examples:\n  \
        imapscope serve recordings/golden/login-select.jsonl --listen 127.0.0.1:1143\n  \
        imapscope serve session.jsonl --client-tls tls --match name --speed 10\n\n\
        Each client connection plays the next recording. A command that matches no recorded\n\
        command gets `tag BAD` and a diagnostic on stderr; at the end, recorded commands never\n\
        asked for are reported. It never connects anywhere. Exit status: 0 every recording was\n\
        used fully and exactly, 1 otherwise, 2 unusable input.")]
    Serve(ServeArgs),
    /// Render transcripts for reading, like a telnet session with timings.
    #[command(after_help = "Examples:\n  \
        imapscope show recordings/20261125T210501.250000Z-000003.jsonl\n  \
        imapscope show recordings/*.jsonl            # several sessions, interleaved by time\n  \
        imapscope show --follow recordings/20261125T210501.250000Z-000003.jsonl   # like tail -f\n  \
        imapscope show --stats --json recordings/*.jsonl")]
    Show(ShowArgs),
    /// List recorded sessions: start, duration, client, user, upstream, commands, errors, size.
    #[command(
        after_help = "Example:\n  imapscope ls            # recordings/\n  imapscope ls /tmp/rec --json"
    )]
    Ls(LsArgs),
    /// Turn other tools' logs into transcripts.
    #[command(
        subcommand,
        after_help = "Example:\n  imapscope import rawlog /var/log/dovecot/rawlog/nell/20261126-005904.9721.1.in"
    )]
    Import(ImportCommand),
    /// Manage imapscope's certificate authority (for intercepting TLS).
    #[command(
        subcommand,
        after_help = "Example:\n  imapscope ca init             # create certs/ca.pem (once)\n  imapscope ca show             # where it is and how to trust it in Thunderbird"
    )]
    Ca(CaCommand),
}

#[derive(Args)]
struct ReplayArgs {
    /// The capture to replay: transcript files, directories of them, or glob patterns. Each
    /// session runs on its own connection, in the order the sessions started.
    #[arg(required = true, value_name = "CAPTURE")]
    transcripts: Vec<PathBuf>,
    /// The server to replay against, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// How to start each connection: none or tls. Default: as each recording did (STARTTLS is
    /// played as the recorded command it is).
    #[arg(long, value_enum, value_name = "MODE")]
    upstream_tls: Option<TlsMode>,
    /// Run the sessions at once, each starting at its recorded offset from the first, as the
    /// client opened them (pushes one connection saw because of another are then reproduced).
    #[arg(long)]
    concurrent: bool,
    /// Also trust this CA (PEM) for the server's certificate. A server certificate that is
    /// itself in the file is accepted whatever its extensions (a self-signed CA:TRUE one).
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// Accept the server certificate with this SHA-256 fingerprint (`SHA256:AB:CD:...`, as a
    /// refused handshake prints it), whatever its issuer, names and dates. Repeatable.
    #[arg(long, value_name = "SHA256:HEX")]
    upstream_fingerprint: Vec<String>,
    /// Do not verify the server's certificate.
    #[arg(long)]
    insecure_upstream: bool,
    /// Credentials for recordings whose LOGIN/AUTHENTICATE were redacted (else IMAPSCOPE_LOGIN).
    #[arg(long, value_name = "USER:PASS")]
    login: Option<String>,
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

#[derive(Args)]
struct ServeArgs {
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
    /// Play IDLE pushes this many times faster than recorded.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    speed: f64,
    /// Directory of imapscope's CA (for --client-tls).
    #[arg(long, default_value = "certs", value_name = "DIR")]
    certs: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Args)]
struct ShowArgs {
    #[arg(required = true, value_name = "TRANSCRIPT")]
    transcripts: Vec<PathBuf>,
    /// Keep reading as the transcript grows, until its end line.
    #[arg(long)]
    follow: bool,
    /// Show literals whole instead of their size and first line.
    #[arg(long)]
    full: bool,
    /// Colors: auto (only on a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    color: ColorChoice,
    /// Per command: count, NO/BAD, latency p50/p95/max; bytes each way; duration.
    #[arg(long)]
    stats: bool,
    /// With --stats: JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LsArgs {
    /// Directory of transcripts.
    #[arg(default_value = "recordings")]
    dir: PathBuf,
    /// One JSON object per session.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// A Dovecot rawlog pair (NAME.in + NAME.out, with or without timestamps).
    #[command(after_help = "Example:\n  \
        imapscope import rawlog /var/log/dovecot/rawlog/nell/20261126-005904.9721.1.in\n  \
        imapscope replay recordings/20261126-005904.9721.1.jsonl --upstream 127.0.0.1:143 --login nell:secret\n\n\
        A rawlog starts after login; the import adds the greeting and a LOGIN with its password\n\
        redacted (marked as synthesized), so the transcript replays with --login.")]
    Rawlog {
        /// The .in file, the .out file or their common stem.
        path: PathBuf,
        /// Where to write the transcript. Default: recordings/NAME.jsonl.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The user of the session. Default: the rawlog's directory name (rawlog_dir=.../%u).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA if there is none (an existing one is kept), then show it.
    #[command(
        after_help = "Example:\n  imapscope ca init            # creates certs/ca.pem, certs/ca.crt, certs/ca-key.pem"
    )]
    Init(CaArgs),
    /// Show the CA: path, subject, fingerprint, validity, and how to trust it.
    #[command(after_help = "Example:\n  imapscope ca show --certs /etc/imapscope/certs")]
    Show(CaArgs),
}

#[derive(Args)]
struct CaArgs {
    /// Directory of the CA files.
    #[arg(long, default_value = "certs", value_name = "DIR")]
    certs: PathBuf,
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
    /// Seconds to wait for the upstream to accept a connection, and for each TLS handshake.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    connect_timeout: u64,
    /// TLS towards the client: none, starttls or tls (implicit, as on port 993).
    /// Default: none, or tls when the upstream port is 993.
    #[arg(long, value_enum, value_name = "MODE")]
    client_tls: Option<TlsMode>,
    /// TLS towards the server. Default: tls when the upstream port is 993, else what
    /// --client-tls says.
    #[arg(long, value_enum, value_name = "MODE")]
    upstream_tls: Option<TlsMode>,
    /// Also trust this CA (PEM) for the upstream's certificate, besides the Mozilla roots. A
    /// server certificate that is itself in the file is accepted whatever its extensions (a
    /// self-signed CA:TRUE one, as `openssl req -x509` makes).
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// Accept the upstream certificate with this SHA-256 fingerprint (`SHA256:AB:CD:...`, as a
    /// refused handshake prints it), whatever its issuer, names and dates. Repeatable.
    #[arg(long, value_name = "SHA256:HEX")]
    upstream_fingerprint: Vec<String>,
    /// Do not verify the upstream's certificate at all (anyone in the path can then read
    /// the session).
    #[arg(long)]
    insecure_upstream: bool,
    /// Directory of imapscope's CA (created on first need).
    #[arg(long, default_value = "certs", value_name = "DIR")]
    certs: PathBuf,
}

/// The relay hands 4 KiB to 256 KiB buffers between threads for every chunk it reads. By
/// default glibc serves the large ones with mmap and gives freed memory back at once, so each
/// chunk costs a page fault per page (about a sixth of the relay's CPU in a profile). Keeping
/// them on the heap and not trimming it makes the memory reusable.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
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
        Command::Replay(args) => return runtime.block_on(replay(args, cli.verbose > 0)),
        Command::Serve(args) => return runtime.block_on(serve(args)),
        Command::Record(args) => runtime.block_on(record(args)),
        Command::Show(args) => show(args),
        Command::Ls(args) => ls(args),
        Command::Import(ImportCommand::Rawlog { path, out, user }) => {
            runtime.block_on(import_rawlog(&path, out, user.as_deref()))
        }
        Command::Ca(CaCommand::Init(args)) => ca_init(&args.certs),
        Command::Ca(CaCommand::Show(args)) => ca_show(&args.certs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("imapscope: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Builds what the chosen TLS modes need: the CA and its server config for the client leg,
/// the verifying client config for the upstream leg.
fn tls_setup(args: &RecordArgs, client: TlsMode, upstream: TlsMode) -> Result<TlsSetup, String> {
    let upstream_host = tls::host_of(&args.upstream).to_string();
    let client_leg = if client == TlsMode::None {
        None
    } else {
        let (authority, created) = Authority::ensure(&args.certs).map_err(|e| e.to_string())?;
        if created == Created::New {
            tracing::warn!(
                "created imapscope's CA in {}: clients must trust {} (see `imapscope ca show`)",
                args.certs.display(),
                args.certs.join(tls::authority::CA_CERT).display()
            );
        } else {
            tracing::info!(
                "intercepting client TLS with the CA in {} (SHA-256 {})",
                args.certs.display(),
                authority.fingerprint()
            );
        }
        let authority = Arc::new(authority);
        let config = tls::client_leg_config(authority.clone(), &upstream_host)
            .map_err(|e| format!("client TLS configuration: {e}"))?;
        Some(ClientLeg { authority, config })
    };
    let upstream_leg = if upstream == TlsMode::None {
        None
    } else {
        if args.insecure_upstream {
            tracing::warn!(
                "--insecure-upstream: the upstream's certificate is NOT verified; anyone in the \
                 path to {} can read and change this session",
                args.upstream
            );
        }
        let trust = tls::UpstreamTrust::new(
            args.upstream_ca.as_deref(),
            &args.upstream_fingerprint,
            args.insecure_upstream,
        )
        .map_err(|e| format!("upstream TLS configuration: {e}"))?;
        Some(UpstreamLeg::new(trust).map_err(|e| format!("upstream TLS configuration: {e}"))?)
    };
    Ok(TlsSetup {
        upstream_host,
        client_leg,
        upstream_leg,
    })
}

/// Exit status: 0 every recording used fully and exactly, 1 otherwise, 2 unusable input.
async fn serve(args: ServeArgs) -> ExitCode {
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
    };
    if needs_tls(&capture.scripts, &options) {
        let authority = match Authority::ensure(&args.certs) {
            Ok((a, _)) => Arc::new(a),
            Err(e) => return unusable(e.to_string()),
        };
        match tls::client_leg_config(authority, "localhost") {
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
    print!("{}", report.render());
    if report.ok() && (!interrupted || args.rounds == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Exit status: 0 all matched, 1 a difference, 2 unusable input.
async fn replay(args: ReplayArgs, verbose: bool) -> ExitCode {
    use imapscope::replay::{Capture, Extras, Login, ReplayOptions};
    let unusable = |message: String| {
        eprintln!("imapscope: {message}");
        ExitCode::from(2)
    };
    let login = match &args.login {
        Some(text) => match Login::parse(text) {
            Some(l) => Some(l),
            None => return unusable("--login takes USER:PASS".into()),
        },
        None => Login::from_env(),
    };
    let login = login.map(|mut l| {
        l.token = args.oauth_token.clone();
        l
    });
    let trust = tls::UpstreamTrust::new(
        args.upstream_ca.as_deref(),
        &args.upstream_fingerprint,
        args.insecure_upstream,
    );
    let tls_config = match trust.and_then(|t| t.config()) {
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
    };
    // Read everything first: unusable input stops the run before any traffic.
    let capture = match Capture::load(&args.transcripts) {
        Ok(c) => c,
        Err(e) => return unusable(e.to_string()),
    };
    for note in &capture.skipped {
        eprintln!("imapscope: {note}");
    }
    let capture = match capture.with_login(login.as_ref()) {
        Ok(c) => c,
        Err(e) => return unusable(e.to_string()),
    };
    let reports = imapscope::replay::replay_capture(&capture, &options, args.concurrent).await;
    let mut all_ok = true;
    for report in &reports {
        all_ok &= report.ok();
        if args.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.render(verbose));
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn show(args: ShowArgs) -> Result<(), String> {
    use imapscope::show::{Style, render, stats};
    use std::io::IsTerminal;
    let style = Style {
        color: match args.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::io::stdout().is_terminal(),
        },
    };
    if args.follow {
        return follow(&args.transcripts, style, args.full);
    }
    let mut all = Vec::new();
    for path in &args.transcripts {
        let t = imapscope::transcript::read_transcript(path).map_err(|e| e.to_string())?;
        if t.torn_last_line {
            eprintln!(
                "imapscope: {}: the last line is torn (imapscope stopped while writing it); showing the rest",
                path.display()
            );
        }
        all.push((path.display().to_string(), t.records));
    }
    if args.stats {
        let st = stats(&all);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?
            );
        } else {
            print!("{}", st.render());
        }
        return Ok(());
    }
    print!("{}", render(&all, style, args.full));
    Ok(())
}

/// `show --follow`: renders records as they are appended, until every transcript has ended.
fn follow(paths: &[PathBuf], style: imapscope::show::Style, full: bool) -> Result<(), String> {
    use imapscope::show::Renderer;
    use imapscope::transcript::Record;
    use std::io::{Read, Seek, SeekFrom, Write};
    struct Followed {
        path: PathBuf,
        offset: u64,
        pending: Vec<u8>,
        renderer: Renderer,
        ended: bool,
    }
    let many = paths.len() > 1;
    let mut followed: Vec<Followed> = paths
        .iter()
        .map(|p| Followed {
            path: p.clone(),
            offset: 0,
            pending: Vec::new(),
            renderer: Renderer::new(
                style,
                full,
                if many {
                    format!(
                        "{} ",
                        p.file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    )
                } else {
                    String::new()
                },
            ),
            ended: false,
        })
        .collect();
    let mut stdout = std::io::stdout();
    while followed.iter().any(|f| !f.ended) {
        let mut progressed = false;
        for f in followed.iter_mut().filter(|f| !f.ended) {
            let mut file =
                std::fs::File::open(&f.path).map_err(|e| format!("{}: {e}", f.path.display()))?;
            file.seek(SeekFrom::Start(f.offset))
                .map_err(|e| e.to_string())?;
            let mut fresh = Vec::new();
            let n = file.read_to_end(&mut fresh).map_err(|e| e.to_string())?;
            f.offset += n as u64;
            f.pending.extend_from_slice(&fresh);
            while let Some(nl) = f.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = f.pending.drain(..=nl).collect();
                progressed = true;
                match serde_json::from_slice::<Record>(&line) {
                    Ok(record) => {
                        f.ended |= matches!(record, Record::End(_));
                        let _ = stdout.write_all(f.renderer.record(&record).as_bytes());
                    }
                    Err(e) if !line.trim_ascii().is_empty() => {
                        eprintln!("imapscope: {}: unreadable line: {e}", f.path.display());
                    }
                    Err(_) => {}
                }
            }
        }
        let _ = stdout.flush();
        if !progressed {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

fn ls(args: LsArgs) -> Result<(), String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .map_err(|e| format!("{}: {e}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    let mut listings = Vec::with_capacity(paths.len());
    for path in paths {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match imapscope::transcript::read_transcript(&path) {
            Ok(t) => listings.push(imapscope::show::listing(name, size, &t.records)),
            Err(e) => eprintln!("imapscope: skipping {e}"),
        }
    }
    // By start time, whatever the names say (files renamed, or from older versions).
    listings.sort_by(|a, b| a.start_key().cmp(&b.start_key()));
    if !args.json {
        println!("{}", imapscope::show::Listing::header());
    }
    for l in listings {
        if args.json {
            println!("{}", serde_json::to_string(&l).map_err(|e| e.to_string())?);
        } else {
            println!("{}", l.render());
        }
    }
    Ok(())
}

async fn import_rawlog(
    path: &std::path::Path,
    out: Option<PathBuf>,
    user: Option<&str>,
) -> Result<(), String> {
    let dest = match out {
        Some(d) => d,
        None => {
            let stem = path.with_extension("");
            let name = stem
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "rawlog".into());
            std::fs::create_dir_all("recordings").map_err(|e| format!("recordings: {e}"))?;
            PathBuf::from("recordings").join(format!("{name}.jsonl"))
        }
    };
    let messages = imapscope::import::import_rawlog(path, &dest, user)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}: {messages} messages", dest.display());
    Ok(())
}

fn mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::None => "none",
        TlsMode::Starttls => "starttls",
        TlsMode::Tls => "tls",
    }
}

fn ca_init(dir: &std::path::Path) -> Result<(), String> {
    let (_, created) = Authority::ensure(dir).map_err(|e| e.to_string())?;
    match created {
        Created::New => println!("Created a new CA in {}.\n", dir.display()),
        Created::Existing => println!("A CA exists in {} already; keeping it.\n", dir.display()),
    }
    ca_show(dir)
}

fn ca_show(dir: &std::path::Path) -> Result<(), String> {
    let authority = Authority::load(dir).map_err(|e| {
        format!(
            "{e}\n(no CA yet? create one with `imapscope ca init --certs {}`)",
            dir.display()
        )
    })?;
    let pem = dir.join(tls::authority::CA_CERT);
    let der = dir.join(tls::authority::CA_DER);
    let (subject, not_before, not_after) =
        match x509_parser::parse_x509_certificate(authority.cert_der()) {
            Ok((_, cert)) => (
                cert.subject().to_string(),
                cert.validity().not_before.to_string(),
                cert.validity().not_after.to_string(),
            ),
            Err(e) => {
                return Err(format!(
                    "{}: cannot read the certificate: {e}",
                    pem.display()
                ));
            }
        };
    println!("Certificate:  {}", pem.display());
    println!("  (DER form:  {})", der.display());
    println!(
        "Key:          {} (owner-only)",
        dir.join(tls::authority::CA_KEY).display()
    );
    println!("Subject:      {subject}");
    println!("SHA-256:      {}", authority.fingerprint());
    println!("Valid:        {not_before} to {not_after}");
    println!();
    println!("Trust it in Thunderbird:");
    println!(
        "  Settings > Privacy & Security > Certificates > Manage Certificates > Authorities >"
    );
    println!(
        "  Import..., choose {}, tick \"Trust this CA to identify websites\" (also",
        der.display()
    );
    println!("  used for mail servers).");
    println!("Trust it system-wide on Debian (curl, Python, most clients):");
    println!(
        "  cp {} /usr/local/share/ca-certificates/imapscope.crt",
        pem.display()
    );
    println!("  update-ca-certificates");
    println!(
        "Or per tool: curl --cacert {0}, openssl s_client -CAfile {0}.",
        pem.display()
    );
    Ok(())
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
    let mut config = RelayConfig::plain(args.listen, &args.upstream, out.clone());
    config.redact = !args.record_secrets;
    config.connect_timeout = Duration::from_secs(args.connect_timeout);
    let port_993 = args
        .upstream
        .rsplit_once(':')
        .is_some_and(|(_, p)| p == "993");
    let implied = if port_993 {
        TlsMode::Tls
    } else {
        TlsMode::None
    };
    config.client_tls = args.client_tls.unwrap_or(implied);
    // A 993 upstream speaks implicit TLS whatever the client leg does (none/tls: a plain
    // client on localhost, recorded against a real TLS server).
    config.upstream_tls = args.upstream_tls.unwrap_or(if port_993 {
        TlsMode::Tls
    } else {
        args.client_tls.unwrap_or(TlsMode::None)
    });
    if (config.client_tls == TlsMode::Starttls) != (config.upstream_tls == TlsMode::Starttls) {
        return Err(format!(
            "--client-tls {} with --upstream-tls {} is not supported: STARTTLS is intercepted \
             only when both legs use it; otherwise combine none and tls freely",
            mode_name(config.client_tls),
            mode_name(config.upstream_tls)
        ));
    }
    let (client_tls, upstream_tls) = (config.client_tls, config.upstream_tls);
    config.tls = tls_setup(&args, client_tls, upstream_tls)?;
    let server = RelayServer::bind(config)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    if args.record_secrets {
        tracing::warn!("--record-secrets: passwords and SASL payloads will be written to disk");
    }
    tracing::info!(
        "listening on {}, relaying to {}, {} (client leg: {}, upstream leg: {})",
        server.local_addr(),
        args.upstream,
        match &out {
            Some(dir) => format!("transcripts in {}", dir.display()),
            None => "not recording (--out none)".to_string(),
        },
        mode_name(client_tls),
        mode_name(upstream_tls),
    );
    let shutdown = shutdown_on_signals();
    server.run(shutdown).await;
    Ok(())
}
