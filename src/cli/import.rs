//! `imapscope import`: other tools' logs as transcripts.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ImportCommand {
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

pub async fn import_rawlog(
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
