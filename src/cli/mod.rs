//! The command line, one file per subcommand (as cargo's `commands/`): each file holds its
//! options and its body; this one parses and dispatches.

pub mod ca;
pub mod demo;
pub mod import;
pub mod ls;
pub mod record;
pub mod replay;
pub mod serve;
pub mod show;
pub mod web;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output: warnings and errors only (no per-command lines).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Relay clients to an IMAP server and record one transcript per connection.
    #[command(after_help = "Examples:\n  \
        imapscope record --upstream 127.0.0.1:143\n  \
        imapscope record --upstream mail.example.com:143 --listen 127.0.0.1:2143 --out /tmp/rec\n  \
        imapscope record --upstream 127.0.0.1:143 --out none     # relay and log, keep no transcript\n  \
        imapscope record --upstream imap.example.com:993          # TLS both legs (993 implies it)\n  \
        imapscope record --upstream 127.0.0.1:143 --client-tls starttls --upstream-ca server.pem\n  \
        imapscope record --upstream imap.example.com:993 --client-tls none   # plain client, TLS server\n\n\
        Each completed command is logged on stderr as\n  #3 A2 SELECT INBOX -> OK 0.41 ms\n\
        (connection, tag, command, status, latency). Ctrl-C, SIGTERM or SIGHUP (not under nohup)\n\
        stops accepting, closes every transcript with an end line, and exits 0.")]
    Record(record::RecordArgs),
    /// Replay recorded sessions against a live server and diff its answers.
    #[command(after_help = "Examples:\n  \
        imapscope replay recordings/golden/*.jsonl --upstream 127.0.0.1:143 --login nell:secret\n  \
        IMAPSCOPE_LOGIN=nell:secret imapscope replay session.jsonl --upstream imap.example.com:993 --json\n\n\
        Matching follows Dovecot's imaptest: tags map, untagged responses of a command may come\n\
        in any order, completions match on status and response code (not text), UIDVALIDITY,\n\
        UIDNEXT, HIGHESTMODSEQ, MODSEQ, INTERNALDATE and greeting/ID texts are variables bound\n\
        on first sight, FETCH items may come in any order, FLAGS are sets without \\Recent.\n\
        Exit status: 0 all matched, 1 a difference, 2 unusable input, 3 the server could not be \
        reached (no connection or TLS handshake; nothing else differed).")]
    Replay(replay::ReplayArgs),
    /// Play recorded sessions' server side to a client under test: a fake IMAP server.
    #[command(after_help = "Examples:\n  \
        imapscope serve recordings/golden/login-select.jsonl --listen 127.0.0.1:1143\n  \
        imapscope serve session.jsonl --client-tls tls --match name --speed 10\n\n\
        Each client connection plays the next recording. A command that matches no recorded\n\
        command gets `tag BAD` and a diagnostic on stderr; at the end, recorded commands never\n\
        asked for are reported. It never connects anywhere. Exit status: 0 every recording was\n\
        used fully and exactly, 1 otherwise, 2 unusable input.")]
    Serve(serve::ServeArgs),
    /// Render transcripts for reading, like a telnet session with timings.
    #[command(after_help = "Examples:\n  \
        imapscope show recordings/20261125T210501.250000Z-000003.jsonl\n  \
        imapscope show recordings/*.jsonl            # several sessions, interleaved by time\n  \
        imapscope show --follow recordings/20261125T210501.250000Z-000003.jsonl   # like tail -f\n  \
        imapscope show --stats --json recordings/*.jsonl")]
    Show(show::ShowArgs),
    /// List recorded sessions: start, duration, client, user, upstream, commands, errors, size.
    #[command(
        after_help = "Example:\n  imapscope ls            # recordings/\n  imapscope ls /tmp/rec --json"
    )]
    Ls(ls::LsArgs),
    /// Turn other tools' logs into transcripts.
    #[command(
        subcommand,
        after_help = "Example:\n  imapscope import rawlog /var/log/dovecot/rawlog/nell/20261126-005904.9721.1.in"
    )]
    Import(import::ImportCommand),
    /// Manage imapscope's certificate authority (for intercepting TLS).
    #[command(
        subcommand,
        after_help = "Example:\n  imapscope ca init             # create certs/ca.pem (once)\n  imapscope ca show             # where it is and how to trust it in Thunderbird"
    )]
    Ca(ca::CaCommand),
    /// Serve a local web view of recorded sessions (live as they are written).
    #[command(after_help = "Examples:\n  \
        imapscope web                      # recordings/, at http://127.0.0.1:8143/?token=...\n  \
        imapscope web /tmp/rec --listen 127.0.0.1:9000\n  \
        imapscope record --upstream 127.0.0.1:143 --web   # record and watch at once\n\n\
        The URL printed at start carries a random token; every request needs it. Only the\n\
        transcripts under DIR are served, read-only. Keep `replay --json` reports in DIR as\n\
        NAME.replay.json to see them as diffs.")]
    Web(web::WebArgs),
    /// Something to look at without a mail server: a fake server, a recording relay, a
    /// scripted client every few seconds, and the web view of it all.
    #[command(
        after_help = "Example:\n  imapscope demo      # then open the URL it prints; Ctrl-C ends it"
    )]
    Demo(demo::DemoArgs),
}

/// How the server's certificate is trusted: the options `record` and `replay` share.
#[derive(clap::Args)]
pub struct TrustArgs {
    /// Also trust this CA (PEM) for the server's certificate, besides the Mozilla roots. A
    /// server certificate that is itself in the file is accepted whatever its extensions (a
    /// self-signed CA:TRUE one, as `openssl req -x509` makes).
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<std::path::PathBuf>,
    /// Accept the server certificate with this SHA-256 fingerprint (`SHA256:AB:CD:...`, as a
    /// refused handshake prints it), whatever its issuer, names and dates. Repeatable.
    #[arg(long, value_name = "SHA256:HEX")]
    upstream_fingerprint: Vec<String>,
    /// Do not verify the server's certificate at all (anyone in the path can then read the
    /// session).
    #[arg(long)]
    pub insecure_upstream: bool,
}

impl TrustArgs {
    pub fn trust(&self) -> Result<imapscope::tls::UpstreamTrust, imapscope::tls::UpstreamTlsError> {
        imapscope::tls::UpstreamTrust::new(
            self.upstream_ca.as_deref(),
            &self.upstream_fingerprint,
            self.insecure_upstream,
        )
    }
}

/// A non-loopback address only with `--allow-remote` (and a warning): a relay or a view that
/// anyone can reach shows them people's mail.
pub fn check_listen(
    listen: std::net::SocketAddr,
    allow_remote: bool,
    what: &str,
) -> Result<(), String> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        return Err(format!(
            "refusing to listen on {listen}, which is not a loopback address: anyone who can \
             reach it could use {what} and read the transcripts' contents. Pass --allow-remote \
             if that is what you want."
        ));
    }
    tracing::warn!("listening on non-loopback {listen}: anyone who can reach it can use {what}");
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.verbose, cli.quiet);
    if matches!(
        cli.command,
        Command::Show(_) | Command::Ls(_) | Command::Import(_) | Command::Ca(_)
    ) {
        end_quietly_when_stdout_closes();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("imapscope: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Replay(args) => return runtime.block_on(replay::replay(args, cli.verbose > 0)),
        Command::Serve(args) => return runtime.block_on(serve::serve(args)),
        Command::Record(args) => runtime.block_on(record::record(args)),
        Command::Show(args) => show::show(args),
        Command::Ls(args) => ls::ls(args),
        Command::Import(import::ImportCommand::Rawlog { path, out, user }) => {
            runtime.block_on(import::import_rawlog(&path, out, user.as_deref()))
        }
        Command::Ca(ca::CaCommand::Init(args)) => ca::ca_init(&args.certs),
        Command::Ca(ca::CaCommand::Show(args)) => ca::ca_show(&args.certs),
        Command::Web(args) => runtime.block_on(web::web(args)),
        Command::Demo(args) => runtime.block_on(demo::demo(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("imapscope: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `imapscope show rec/ | head` should end as `cat rec | head` does: quietly, once the reader
/// has gone. Rust ignores SIGPIPE, so `print!` then panics on the broken pipe; commands that
/// only read files and print get the default disposition back. The relaying commands keep it
/// ignored: a client that goes away must not end the relay.
fn end_quietly_when_stdout_closes() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before the runtime starts its
    // threads; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints a report on stdout; a reader that has gone (`| head`) takes what it wanted, and the
/// exit status still says how the run went.
pub fn print_report(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    // rustls's own warnings (an IP address sent as SNI, which mbsync and neomutt do) say
    // nothing a person must act on, and carry no connection number; imapscope says in its own
    // words what failed in a handshake. `-v` shows them.
    let default = match (quiet, verbose) {
        (true, _) => "warn,rustls=error",
        (false, 0) => "info,rustls=error",
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
        // A log that can no longer be written (stderr piped into `head` that has quit, a
        // closed terminal) loses lines, nothing else: tracing-subscriber would say so with
        // eprintln!, which panics on that same stderr, in whichever task was logging (a
        // session, or the shutdown on SIGTERM, which then never came).
        .log_internal_errors(false)
        .init();
}

/// `--upstream`: HOST:PORT, checked at start (a missing port would fail every session). An
/// IPv6 address is written in brackets: `[::1]:143`.
pub fn host_port(text: &str) -> Result<String, String> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| {
        format!("{text:?} has no port: give HOST:PORT, e.g. {text}:143 or {text}:993")
    })?;
    if host.is_empty() {
        return Err(format!(
            "{text:?} has no host: give HOST:PORT, e.g. 127.0.0.1{text}"
        ));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{text:?}: an IPv6 address goes in brackets, as in [::1]:143"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(text.to_string()),
        _ => Err(format!("{text:?}: {port:?} is not a port number (1-65535)")),
    }
}
