//! `imapscope show`: transcripts rendered for reading, like a telnet session with timings.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Args)]
pub struct ShowArgs {
    /// Transcript files, or directories of them (`recordings/`).
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

pub fn show(args: ShowArgs) -> Result<(), String> {
    use imapscope::show::{Style, render, stats};
    use std::io::IsTerminal;
    let style = Style {
        color: match args.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::io::stdout().is_terminal(),
        },
    };
    let mut paths = Vec::new();
    for path in &args.transcripts {
        if path.is_dir() {
            // A directory's transcripts in the order their names give: by start time.
            let mut files = imapscope::replay::capture::expand(path).map_err(|e| e.to_string())?;
            if files.is_empty() {
                return Err(format!(
                    "{}: no transcripts (*.jsonl) in it",
                    path.display()
                ));
            }
            files.sort();
            paths.extend(files);
        } else {
            paths.push(path.clone());
        }
    }
    if args.follow {
        return follow(&paths, style, args.full);
    }
    let mut all = Vec::new();
    for path in &paths {
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
