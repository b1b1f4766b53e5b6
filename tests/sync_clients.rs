//! Mail synchronizers through imapscope: mbsync (isync) and offlineimap, real clients that
//! upload as well as download, run twice with a local change in between.
//!
//! Each sync is recorded against a real Dovecot, replayed against a second Dovecot seeded
//! alike, and served to the same client starting from the same local state. These clients
//! showed what a desktop client did not: mbsync stamps every upload with a new `X-TUID`
//! header, offlineimap dates uploads by the file and, its threads sharing one connection,
//! selects folders in a different order (and a different number of times) each run.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

/// The mail both Dovecots start with.
fn seed(dovecot: &Dovecot) {
    for (subject, size) in [("Project status", 900), ("Lunch on Friday", 400)] {
        dovecot.deliver("nell", "INBOX", &message(subject, size));
    }
    dovecot.deliver("nell", "INBOX", &message("Photos from the trip", 40_000));
}

/// A message written in the client's own store, to be uploaded by the next sync.
const LOCAL: &str = "From: Nell <nell@example.com>\nTo: Bob <bob@example.com>\n\
                     Subject: Local draft pushed back\nDate: Fri, 27 Nov 2026 08:00:00 +0000\n\
                     Message-ID: <local1@example.com>\n\nWritten offline, synced later.\n";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"))
}

fn assert_ran(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    assert_ran(
        "cp",
        &run(
            "cp",
            &["-a", &from.to_string_lossy(), &to.to_string_lossy()],
        ),
    );
}

/// A client's sync: first run, a local change, second run.
trait Sync {
    fn sync(&self, port: u16) -> Output;
    fn change_locally(&self);
    /// Where the client keeps its state (mail and sync state), to start again from.
    fn state(&self) -> &Path;
}

/// Records `client`'s two syncs, replays them against a fresh Dovecot, then serves them to
/// the client started again from the same local state.
fn record_replay_serve(client: &dyn Sync) {
    let dovecot = Dovecot::start();
    seed(&dovecot);
    let before = tempfile::tempdir().unwrap();
    let snapshot = before.path().join("state");
    copy_dir(client.state(), &snapshot);

    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    assert_ran("first sync", &client.sync(scope.port()));
    client.change_locally();
    assert_ran("second sync", &client.sync(scope.port()));
    let recorded = wait_for_ended(out.path(), 2);
    for (path, t) in &recorded {
        assert_paired(path, t);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(!text.contains(PASSWORD), "{}", path.display());
    }
    let uploads = recorded
        .iter()
        .flat_map(|(_, t)| messages(t))
        .filter(|m| m.name.as_deref() == Some("APPEND"))
        .count();
    assert!(uploads >= 1, "the second sync uploads the local message");
    let capture = out.path().to_string_lossy().into_owned();

    // Against a Dovecot seeded alike.
    let fresh = Dovecot::start();
    seed(&fresh);
    let login = format!("nell:{PASSWORD}");
    let replay = run(
        env!("CARGO_BIN_EXE_imapscope"),
        &[
            "replay",
            &capture,
            "--upstream",
            &fresh.addr(),
            "--login",
            &login,
        ],
    );
    let report = String::from_utf8_lossy(&replay.stdout).into_owned()
        + &String::from_utf8_lossy(&replay.stderr);
    assert!(
        replay.status.success() && !report.contains("FAIL"),
        "{report}"
    );

    // The same client, from the same local state, against the fake server.
    copy_dir(&snapshot, client.state());
    let (serve, port) = start_serve(&[&capture, "--rounds", "1"]);
    let first = client.sync(port);
    client.change_locally();
    let second = client.sync(port);
    let served = serve.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&served.stdout).into_owned()
        + &String::from_utf8_lossy(&served.stderr);
    assert_ran(&format!("first sync against serve ({report})"), &first);
    assert_ran(&format!("second sync against serve ({report})"), &second);
    assert!(
        served.status.success() && !report.contains("FAIL"),
        "{report}"
    );
}

struct Mbsync {
    dir: tempfile::TempDir,
    state: std::path::PathBuf,
}

impl Mbsync {
    fn new() -> Mbsync {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("mail")).unwrap();
        Mbsync { dir, state }
    }
}

impl Sync for Mbsync {
    fn sync(&self, port: u16) -> Output {
        let mail = self.state().join("mail");
        let rc = self.dir.path().join("mbsyncrc");
        std::fs::write(
            &rc,
            format!(
                "IMAPAccount acct\nHost 127.0.0.1\nPort {port}\nUser nell\nPass {PASSWORD}\n\
                 SSLType None\nAuthMechs LOGIN\n\nIMAPStore remote\nAccount acct\n\n\
                 MaildirStore local\nPath {m}/\nInbox {m}/INBOX\nSubFolders Verbatim\n\n\
                 Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n\
                 Remove None\nExpunge Both\nSyncState *\n",
                m = mail.display()
            ),
        )
        .unwrap();
        run("mbsync", &["-c", &rc.to_string_lossy(), "-a"])
    }

    fn change_locally(&self) {
        let inbox = self.state().join("mail/INBOX");
        std::fs::write(inbox.join("new/1700000000.local1.host"), LOCAL).unwrap();
        flag_seen(&inbox.join("cur"), "Project status");
    }

    /// The config is written anew for each port; mail and sync state live here.
    fn state(&self) -> &Path {
        &self.state
    }
}

struct Offlineimap {
    dir: tempfile::TempDir,
    state: std::path::PathBuf,
}

impl Offlineimap {
    fn new() -> Offlineimap {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("mail")).unwrap();
        Offlineimap { dir, state }
    }
}

impl Sync for Offlineimap {
    fn sync(&self, port: u16) -> Output {
        let state = self.state();
        let rc = self.dir.path().join("offlineimaprc");
        std::fs::write(
            &rc,
            format!(
                "[general]\naccounts = acct\nmetadata = {s}/meta\nui = basic\n\n\
                 [Account acct]\nlocalrepository = local\nremoterepository = remote\n\n\
                 [Repository local]\ntype = Maildir\nlocalfolders = {s}/mail\n\n\
                 [Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\n\
                 remoteport = {port}\nremoteuser = nell\nremotepass = {PASSWORD}\n\
                 ssl = no\nstarttls = no\n",
                s = state.display()
            ),
        )
        .unwrap();
        run(
            "offlineimap",
            &["-c", &rc.to_string_lossy(), "-o", "-u", "basic"],
        )
    }

    fn change_locally(&self) {
        let inbox = self.state().join("mail/INBOX");
        std::fs::write(inbox.join("new/1700000000_0.999.host"), LOCAL).unwrap();
        flag_seen(&inbox.join("cur"), "Project status");
    }

    fn state(&self) -> &Path {
        &self.state
    }
}

/// Marks the message with `subject` in a Maildir `cur` directory as seen (`:2,S`).
fn flag_seen(cur: &Path, subject: &str) {
    for entry in std::fs::read_dir(cur).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap();
        if !contains(&text, format!("Subject: {subject}").as_bytes()) {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (base, flags) = name.split_once(":2,").unwrap_or((&name, ""));
        if !flags.contains('S') {
            let mut flags: Vec<char> = flags.chars().chain(['S']).collect();
            flags.sort();
            let renamed = format!("{base}:2,{}", flags.into_iter().collect::<String>());
            std::fs::rename(&path, cur.join(renamed)).unwrap();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn mbsync_syncs_through_record_replay_and_serve() {
    record_replay_serve(&Mbsync::new());
}

#[test]
fn offlineimap_syncs_through_record_replay_and_serve() {
    record_replay_serve(&Offlineimap::new());
}
