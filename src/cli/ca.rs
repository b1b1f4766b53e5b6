//! `imapscope ca`: imapscope's certificate authority for intercepting TLS.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use imapscope::tls::{self, Authority, Created};

#[derive(Subcommand)]
pub enum CaCommand {
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
pub struct CaArgs {
    /// Directory of the CA files.
    #[arg(long, default_value = "certs", value_name = "DIR")]
    pub certs: PathBuf,
}

pub fn ca_init(dir: &std::path::Path) -> Result<(), String> {
    let (_, created) = Authority::ensure(dir).map_err(|e| e.to_string())?;
    match created {
        Created::New => println!("Created a new CA in {}.\n", dir.display()),
        Created::Existing => println!("A CA exists in {} already; keeping it.\n", dir.display()),
    }
    ca_show(dir)
}

pub fn ca_show(dir: &std::path::Path) -> Result<(), String> {
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
