//! `imapscope ls`: one line per recorded session, by start time.

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct LsArgs {
    /// Directory of transcripts.
    #[arg(default_value = "recordings")]
    dir: PathBuf,
    /// One JSON object per session.
    #[arg(long)]
    json: bool,
}

pub fn ls(args: LsArgs) -> Result<(), String> {
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
