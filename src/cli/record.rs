//! `imapscope record`: the relay in front of a real server, one transcript per connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use imapscope::relay::{
    ClientLeg, RelayConfig, RelayServer, TlsSetup, UpstreamLeg, shutdown_on_signals,
};
use imapscope::tls::{self, Authority, Created, TlsMode};

#[derive(Args)]
pub struct RecordArgs {
    /// The real IMAP server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = super::host_port)]
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
    #[command(flatten)]
    trust: super::TrustArgs,
    /// Directory of imapscope's CA (created on first need).
    #[arg(long, default_value = "certs", value_name = "DIR")]
    certs: PathBuf,
    /// Also serve the web view of this run's transcripts, live (default address
    /// 127.0.0.1:8143; the URL with its token is printed).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8143")]
    web: Option<SocketAddr>,
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
        if args.trust.insecure_upstream {
            tracing::warn!(
                "--insecure-upstream: the upstream's certificate is NOT verified; anyone in the \
                 path to {} can read and change this session",
                args.upstream
            );
        }
        let trust = args
            .trust
            .trust()
            .map_err(|e| format!("upstream TLS configuration: {e}"))?;
        Some(UpstreamLeg::new(trust).map_err(|e| format!("upstream TLS configuration: {e}"))?)
    };
    Ok(TlsSetup {
        upstream_host,
        client_leg,
        upstream_leg,
    })
}

pub fn mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::None => "none",
        TlsMode::Starttls => "starttls",
        TlsMode::Tls => "tls",
    }
}

pub async fn record(args: RecordArgs) -> Result<(), String> {
    super::check_listen(args.listen, args.allow_remote, "a relay")?;
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
    let web = match (args.web, &out) {
        (None, _) => None,
        (Some(_), None) => {
            return Err("--web shows transcripts, and --out none keeps none".into());
        }
        (Some(addr), Some(dir)) => {
            super::check_listen(addr, args.allow_remote, "the web view")?;
            Some(super::web::start(dir.clone(), addr, shutdown.clone()).await?)
        }
    };
    server.run(shutdown).await;
    if let Some(web) = web {
        web.wait().await;
    }
    Ok(())
}
