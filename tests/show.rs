//! `imapscope show`, `show --stats` and `ls` on the golden recordings, against committed
//! snapshots: a change to the output fails here until the snapshot is renewed on purpose
//! (`UPDATE_SNAPSHOTS=1 cargo test --test show`) and the diff reviewed.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn imapscope(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run imapscope");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn snapshot(name: &str, actual: &str) {
    let path = repo().join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} changed at line {}:\n- {}\n+ {}\n(UPDATE_SNAPSHOTS=1 renews it)",
            first + 1,
            expected.lines().nth(first).unwrap_or("(end)"),
            actual.lines().nth(first).unwrap_or("(end)")
        );
    }
}

#[test]
fn show_idle_with_a_push() {
    let out = imapscope(&["show", "--color", "never", "recordings/golden/idle.jsonl"]);
    assert!(out.contains("+ idling") && out.contains("* 4 EXISTS") && out.contains("C: DONE"));
    snapshot("show-idle.txt", &out);
}

#[test]
fn show_compress() {
    let out = imapscope(&[
        "show",
        "--color",
        "never",
        "recordings/golden/compress.jsonl",
    ]);
    assert!(out.contains("── COMPRESS DEFLATE from here on ──"));
    assert!(
        out.contains("DEFLATE: client 100 bytes on the wire for 89 of IMAP"),
        "{out}"
    );
    snapshot("show-compress.txt", &out);
}

#[test]
fn show_literals_summarized_or_full() {
    let out = imapscope(&["show", "--color", "never", "recordings/golden/append.jsonl"]);
    assert!(out.contains("│ 268 bytes: From: Ada Lovelace"));
    assert!(out.contains("<redacted>"));
    snapshot("show-append.txt", &out);
    let full = imapscope(&[
        "show",
        "--full",
        "--color",
        "never",
        "recordings/golden/append.jsonl",
    ]);
    assert!(full.lines().count() > out.lines().count() + 5);
}

/// A literal larger than the tracker holds at once (256 KiB) is recorded in parts: `show`
/// sums it up once, with the size and first line of the whole literal, `--full` shows each of
/// its lines once, and a literal the connection cut short says how far it came.
#[test]
fn a_literal_recorded_in_parts_is_shown_whole() {
    let dir = tempfile::tempdir().unwrap();
    let lines = 12_000;
    let literal: String = (0..lines)
        .map(|i| format!("line {i:05} of a large message, long enough to wrap parts\r\n"))
        .collect();
    let fetch = |cut: Option<usize>| {
        let body = match cut {
            Some(n) => literal[..n].to_string(),
            None => format!("{literal})\r\na1 OK done\r\n* BYE\r\na2 OK bye\r\n"),
        };
        format!("* 1 FETCH (BODY[] {{{}}}\r\n{body}", literal.len())
    };
    let show = |name: &str, out: &str, full: bool| {
        let stem = dir.path().join(name);
        std::fs::write(
            stem.with_extension("in"),
            "a1 FETCH 1 BODY[]\r\na2 LOGOUT\r\n",
        )
        .unwrap();
        std::fs::write(stem.with_extension("out"), out).unwrap();
        let transcript = dir.path().join(format!("{name}.jsonl"));
        let stem = stem.with_extension("in");
        imapscope(
            &["import", "rawlog", "-q", "--user", "nell", "--out"]
                .into_iter()
                .chain([transcript.to_str().unwrap(), stem.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        let mut args = vec!["show", "--color", "never", transcript.to_str().unwrap()];
        if full {
            args.insert(1, "--full");
        }
        imapscope(&args)
    };
    assert!(literal.len() > 2 * 256 * 1024);

    let folded = show("whole", &fetch(None), false);
    let summary = format!("│ {} bytes: line 00000 of a large message", literal.len());
    assert_eq!(folded.matches(&summary).count(), 1, "{folded}");
    assert!(!folded.contains("so far"), "{folded}");

    let full = show("whole", &fetch(None), true);
    let shown: Vec<&str> = full
        .lines()
        .filter_map(|l| l.split_once("│ ").map(|(_, text)| text))
        .collect();
    let wanted: Vec<&str> = literal.lines().collect();
    assert_eq!(shown, wanted);

    let cut = 300_000;
    let folded = show("cut", &fetch(Some(cut)), false);
    assert!(
        folded.contains(&format!("│ {cut} bytes so far: line 00000")),
        "{folded}"
    );

    // The same, as `kill -9` leaves it: the last part written, and no note that the
    // connection closed, no end line. The literal is still shown as far as it came, and the
    // transcript is said to stop there.
    let cut_path = dir.path().join("cut.jsonl");
    let text = std::fs::read_to_string(&cut_path).unwrap();
    let last_part = text.rfind(r#"{"type":"part""#).unwrap();
    let end_of_part = last_part + text[last_part..].find('\n').unwrap() + 1;
    assert!(text[end_of_part..].contains(r#""type":"end""#));
    let killed = dir.path().join("killed.jsonl");
    std::fs::write(&killed, &text[..end_of_part]).unwrap();
    let folded = imapscope(&["show", "--color", "never", killed.to_str().unwrap()]);
    assert!(
        folded.contains(&format!("│ {cut} bytes so far: line 00000")),
        "{folded}"
    );
    assert!(
        folded
            .trim_end()
            .ends_with("or was stopped (kill -9, a crash) ──"),
        "{folded}"
    );
}

#[test]
fn show_colors_only_when_asked() {
    let plain = imapscope(&["show", "recordings/golden/errors.jsonl"]);
    assert!(!plain.contains('\x1b'), "piped output has no escape codes");
    let colored = imapscope(&[
        "show",
        "--color",
        "always",
        "recordings/golden/errors.jsonl",
    ]);
    assert!(colored.contains("\x1b[31mNO\x1b[0m"), "NO is red");
    assert!(
        colored.contains("\x1b[7;31m<redacted>\x1b[0m"),
        "secrets are marked"
    );
}

#[test]
fn show_of_a_directory_is_show_of_its_transcripts() {
    let dir = "recordings/golden/thunderbird";
    let mut files: Vec<String> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".jsonl"))
        .collect();
    assert!(files.len() > 1);
    files.sort();
    let mut args = vec!["show", "--color", "never"];
    args.extend(files.iter().map(String::as_str));
    assert_eq!(
        imapscope(&["show", "--color", "never", dir]),
        imapscope(&args)
    );
}

#[test]
fn show_several_sessions_interleaved() {
    let out = imapscope(&[
        "show",
        "--color",
        "never",
        "recordings/golden/errors.jsonl",
        "recordings/golden/idle.jsonl",
    ]);
    // Both were connection #1 of their own runs: the file names tell them apart.
    assert!(
        out.lines()
            .all(|l| l.starts_with("errors ") || l.starts_with("idle ")),
        "{out}"
    );
    snapshot("show-two.txt", &out);
}

#[test]
fn stats_and_ls() {
    let stats = imapscope(&[
        "show",
        "--stats",
        "recordings/golden/errors.jsonl",
        "recordings/golden/store-copy-move-expunge.jsonl",
    ]);
    snapshot("stats.txt", &stats);
    let json = imapscope(&[
        "show",
        "--stats",
        "--json",
        "recordings/golden/errors.jsonl",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let login = v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"] == "LOGIN")
        .unwrap();
    assert_eq!(login["count"], 2);
    assert_eq!(login["no"], 1);
    let ls = imapscope(&["ls", "recordings/golden"]);
    assert!(ls.lines().count() >= 10, "{ls}");
    assert!(ls.contains("nell") && ls.contains("idle.jsonl"));
    assert!(!ls.contains("ASecretPassword"));
}

#[test]
fn follow_renders_a_growing_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.jsonl");
    let golden = std::fs::read_to_string(repo().join("recordings/golden/idle.jsonl")).unwrap();
    let lines: Vec<&str> = golden.lines().collect();
    std::fs::write(&path, format!("{}\n", lines[..5].join("\n"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["show", "--follow", "--color", "never"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The rest arrives later, as from a recording in progress.
    std::fs::write(&path, &golden).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        text,
        imapscope(&["show", "--color", "never", "recordings/golden/idle.jsonl"])
    );
}

/// What a peer sent reaches the terminal as text: an escape sequence that would retitle the
/// window, clear the screen or move the cursor up to forge an earlier line is written out.
#[test]
fn escape_sequences_from_a_peer_are_shown_not_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("escapes");
    std::fs::write(
        stem.with_extension("in"),
        "a1 LOGIN \"ev\x1b[2Jil\" pw\r\na2 FETCH 1 BODY[]\r\n",
    )
    .unwrap();
    std::fs::write(
        stem.with_extension("out"),
        "* OK \x1b]0;pwned\x07\x1b[2J hi\r\na1 OK \x1b[1A\rfake\r\n\
         * 1 FETCH (BODY[] {14}\r\n\x1b[31mred\r\n\u{202e}x)\r\na2 OK done\r\n",
    )
    .unwrap();
    let transcript = dir.path().join("escapes.jsonl");
    imapscope(&[
        "import",
        "rawlog",
        "-q",
        "--out",
        transcript.to_str().unwrap(),
        stem.with_extension("in").to_str().unwrap(),
    ]);
    for args in [
        vec!["show", "--color", "never"],
        vec!["show", "--color", "never", "--full"],
        vec!["ls"],
    ] {
        let mut args = args;
        let ls = args[0] == "ls";
        args.push(if ls { dir.path() } else { &transcript }.to_str().unwrap());
        let out = imapscope(&args);
        assert!(!out.contains('\x1b'), "{args:?}: {out:?}");
        assert!(
            !out.contains('\x07') && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert!(!out.contains("\rfake"), "{out:?}");
    }
    let shown = imapscope(&[
        "show",
        "--color",
        "never",
        "--full",
        transcript.to_str().unwrap(),
    ]);
    assert!(
        shown.contains(r"* OK \x1b]0;pwned\x07\x1b[2J hi"),
        "{shown}"
    );
    assert!(shown.contains(r"a1 OK \x1b[1A\rfake"), "{shown}");
    assert!(shown.contains(r"│ \x1b[31mred"), "{shown}");
    assert!(shown.contains(r"│ \u{202e}x"), "{shown}");
}
