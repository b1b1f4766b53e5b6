//! Mail fetchers through imapscope: fetchmail and getmail, real clients that download the
//! mailbox and leave it on the server. Each fetch is recorded against a real Dovecot,
//! replayed against a second Dovecot seeded alike, and served to the same client starting
//! from the same empty local store. One message is larger than the tracker holds at once
//! (256 KiB), so its literal is recorded, shown, replayed and served in parts.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

/// The subjects and sizes both Dovecots start with.
const MAIL: [(&str, usize); 3] = [
    ("Project status", 900),
    ("Lunch on Friday", 400),
    ("Scans of the contract", 600_000),
];

fn seed(dovecot: &Dovecot) {
    for (subject, size) in MAIL {
        dovecot.deliver("nell", "INBOX", &message(subject, size));
    }
}

fn assert_ran(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client that fetches the whole INBOX into a local store.
trait Fetcher {
    /// Fetches from `port` into a store under `into` (a fresh directory).
    fn fetch(&self, port: u16, into: &Path) -> Output;
    /// Everything the fetch stored, one text.
    fn fetched(&self, into: &Path) -> String;
}

/// Checks that every seeded message arrived whole.
fn assert_fetched(what: &str, text: &str) {
    for (subject, size) in MAIL {
        assert!(
            text.contains(&format!("Subject: {subject}")),
            "{what}: no {subject:?} in what was fetched"
        );
        let body = message(subject, size);
        let last_line = String::from_utf8_lossy(&body[body.len() - 74..]).into_owned();
        assert!(
            text.contains(last_line.trim_end()),
            "{what}: {subject:?} cut"
        );
    }
    // Stored with LF line ends, as both clients do.
    let stored: usize = MAIL
        .iter()
        .map(|&(subject, size)| {
            message(subject, size)
                .iter()
                .filter(|&&b| b != b'\r')
                .count()
        })
        .sum();
    assert!(
        text.len() >= stored,
        "{what}: {} bytes fetched, the messages are {stored}",
        text.len()
    );
}

/// Records `client`'s fetch, replays it against a fresh Dovecot, then serves it to the client
/// with an empty store again.
fn record_replay_serve(client: &dyn Fetcher) {
    let dovecot = Dovecot::start();
    seed(&dovecot);
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let first = tempfile::tempdir().unwrap();
    assert_ran("fetch", &client.fetch(scope.port(), first.path()));
    assert_fetched("fetch through record", &client.fetched(first.path()));
    let recorded = wait_for_ended(out.path(), 1);
    for (path, t) in &recorded {
        assert_paired(path, t);
    }
    assert_no_secrets(out.path(), &[PASSWORD]);
    scope.terminate();
    let capture = out.path().to_string_lossy().into_owned();

    // `show` sums the large literal (the message, or its text) up once, whole.
    let shown = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["show", "--color", "never", &capture])
        .output()
        .unwrap();
    assert_ran("show", &shown);
    let shown = String::from_utf8_lossy(&shown.stdout);
    let literals: Vec<usize> = shown
        .lines()
        .filter_map(|l| l.split_once("│ ")?.1.split_once(" bytes: "))
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    assert!(
        literals.iter().any(|&n| n > MAIL[2].1 - 1000) && !shown.contains("so far"),
        "{shown}"
    );

    let fresh = Dovecot::start();
    seed(&fresh);
    let replay = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["replay", &capture, "--upstream", &fresh.addr()])
        .args(["--login", &format!("nell:{PASSWORD}")])
        .env_remove("IMAPSCOPE_LOGIN")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&replay.stdout).into_owned()
        + &String::from_utf8_lossy(&replay.stderr);
    assert!(
        replay.status.success() && report.contains("PASS") && !report.contains("FAIL"),
        "{report}"
    );

    let (serve, port) = start_serve(&[&capture, "--rounds", "1"]);
    let second = tempfile::tempdir().unwrap();
    let fetched = client.fetch(port, second.path());
    let served = serve.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&served.stdout).into_owned()
        + &String::from_utf8_lossy(&served.stderr);
    assert_ran(&format!("fetch from serve ({report})"), &fetched);
    assert_fetched("fetch from serve", &client.fetched(second.path()));
    assert!(
        served.status.success() && !report.contains("FAIL"),
        "{report}"
    );
}

/// fetchmail, keeping the mail on the server and handing each message to a shell that
/// appends it to one file.
struct Fetchmail;

impl Fetcher for Fetchmail {
    fn fetch(&self, port: u16, into: &Path) -> Output {
        let mbox = into.join("fetched.mbox");
        let rc = into.join("fetchmailrc");
        std::fs::write(
            &rc,
            format!(
                "set no syslog\n\
                 poll 127.0.0.1 service {port} protocol IMAP auth password\n  \
                 user \"nell\" password \"{PASSWORD}\" is root here\n  \
                 keep\n  fetchall\n  sslproto ''\n  \
                 mda \"/bin/sh -c 'cat >> {}'\"\n",
                mbox.display()
            ),
        )
        .unwrap();
        // fetchmail refuses a control file others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        Command::new("fetchmail")
            .arg("-f")
            .arg(&rc)
            .args(["--nodetach", "--silent"])
            .env("FETCHMAILHOME", into)
            .output()
            .expect("fetchmail (scripts/test.sh installs it)")
    }

    fn fetched(&self, into: &Path) -> String {
        std::fs::read_to_string(into.join("fetched.mbox")).unwrap_or_default()
    }
}

/// getmail, reading every message of INBOX into a Maildir and deleting none.
struct Getmail;

impl Getmail {
    fn maildir(into: &Path) -> PathBuf {
        into.join("Maildir")
    }
}

impl Fetcher for Getmail {
    fn fetch(&self, port: u16, into: &Path) -> Output {
        let maildir = Getmail::maildir(into);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        // As root, getmail delivers as the user named here; it must be able to write.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            for dir in [into.to_path_buf(), maildir.clone()]
                .into_iter()
                .chain(["cur", "new", "tmp"].map(|s| maildir.join(s)))
            {
                std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            }
        }
        let rc = into.join("getmailrc");
        std::fs::write(
            &rc,
            format!(
                "[retriever]\ntype = SimpleIMAPRetriever\nserver = 127.0.0.1\nport = {port}\n\
                 username = nell\npassword = {PASSWORD}\nmailboxes = (\"INBOX\",)\n\n\
                 [destination]\ntype = Maildir\npath = {}/\n{}\n\
                 [options]\nread_all = true\ndelete = false\nverbose = 0\n",
                maildir.display(),
                if root { "user = nobody\n" } else { "" }
            ),
        )
        .unwrap();
        Command::new("getmail")
            .arg("--getmaildir")
            .arg(into)
            .arg("--rcfile")
            .arg(&rc)
            .output()
            .expect("getmail (scripts/test.sh installs getmail6)")
    }

    fn fetched(&self, into: &Path) -> String {
        let mut text = String::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(Getmail::maildir(into).join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

#[test]
fn fetchmail_fetches_through_record_replay_and_serve() {
    record_replay_serve(&Fetchmail);
}

#[test]
fn getmail_fetches_through_record_replay_and_serve() {
    record_replay_serve(&Getmail);
}
