//! mutt, a real terminal client, driven through tmux as a person would use it: it logs in
//! with SCRAM-SHA-256 over STARTTLS (intercepted with imapscope's CA), reads a message,
//! saves one to a new folder, deletes one and quits.
//!
//! The capture must hide the password and the server's SCRAM proof, replay green against a
//! second Dovecot, and be served back to mutt: a SCRAM client checks the server's proof of
//! the password, so `serve --login` has to answer this run's nonces (a recording's proof is
//! for nonces that will never come again).

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

const MECHANISMS: &str = "plain login scram-sha-1 scram-sha-256";

/// The mail both Dovecots start with, oldest first as mutt lists it.
fn seed(dovecot: &Dovecot) {
    for (subject, size) in [
        ("Quarterly figures", 1_500),
        ("Keep this one", 900),
        ("Delete me please", 600),
    ] {
        dovecot.deliver("nell", "INBOX", &message(subject, size));
    }
}

/// A mutt in its own tmux server (its own socket), ended when dropped.
struct Mutt {
    socket: String,
}

impl Mutt {
    /// Starts mutt on `muttrc` in a 150×40 terminal.
    fn start(muttrc: &Path, name: &str) -> Mutt {
        let socket = format!("imapscope-mutt-{}-{name}", std::process::id());
        let command = format!("mutt -n -F {}", muttrc.display());
        let started = tmux(
            &socket,
            &[
                "new-session",
                "-d",
                "-x",
                "150",
                "-y",
                "40",
                "-e",
                "TERM=xterm",
                "-e",
                "LANG=C.UTF-8",
                &command,
            ],
        );
        assert!(
            started.status.success(),
            "tmux (scripts/test.sh installs it): {}",
            String::from_utf8_lossy(&started.stderr)
        );
        // The session ends with mutt; keep the pane to read what mutt said last.
        let _ = tmux(&socket, &["set-option", "-g", "remain-on-exit", "on"]);
        Mutt { socket }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&tmux(&self.socket, &["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Waits until the screen shows `text`, else fails with the screen.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mutt never showed {text:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let _ = tmux(&self.socket, &["send-keys", "-l", text]);
    }

    /// Presses named keys (`Enter`, `C-u`).
    fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend(keys);
        let _ = tmux(&self.socket, &args);
    }

    /// Whether mutt has quit (its pane is dead), waiting up to 20 s.
    fn exited(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let dead = tmux(&self.socket, &["display-message", "-p", "#{pane_dead}"]);
            if String::from_utf8_lossy(&dead.stdout).trim() == "1" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Mutt {
    fn drop(&mut self) {
        let _ = tmux(&self.socket, &["kill-server"]);
    }
}

fn tmux(socket: &str, args: &[&str]) -> Output {
    Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("tmux is needed for this test (scripts/test.sh installs it)")
}

/// A muttrc for `port` (STARTTLS, SCRAM-SHA-256, imapscope's CA trusted, no caches, so that
/// every run asks the server for the same things).
fn muttrc(dir: &Path, name: &str, port: u16, ca: &Path) -> std::path::PathBuf {
    let path = dir.join(format!("muttrc-{name}"));
    let text = format!(
        "set imap_user = \"nell\"\n\
         set imap_pass = \"{PASSWORD}\"\n\
         set folder = \"imap://localhost:{port}/\"\n\
         set spoolfile = \"+INBOX\"\n\
         set record = \"\"\n\
         set postponed = \"\"\n\
         set ssl_starttls = yes\n\
         set ssl_force_tls = yes\n\
         set ssl_ca_certificates_file = \"{ca}\"\n\
         set certificate_file = \"{dir}/certificates-{name}\"\n\
         set imap_authenticators = \"scram-sha-256\"\n\
         set imap_idle = no\n\
         set imap_check_subscribed = no\n\
         set header_cache = \"\"\n\
         set message_cachedir = \"\"\n\
         set mail_check = 60\n\
         set timeout = 60\n\
         set confirmappend = no\n\
         set confirmcreate = no\n\
         set delete = yes\n\
         set move = no\n\
         set mark_old = no\n\
         set beep = no\n\
         set wait_key = no\n\
         set sort = mailbox-order\n\
         set charset = \"utf-8\"\n",
        ca = ca.display(),
        dir = dir.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// What a person does: read the first message, save the second to a new folder (mutt's save
/// moves: the original is marked deleted), delete the third, purge both, quit. Returns
/// whether mutt quit by itself.
fn use_mutt(muttrc: &Path, name: &str) -> bool {
    let mutt = Mutt::start(muttrc, name);
    mutt.wait_for("Delete me please");
    mutt.press(&["1", "Enter"]);
    mutt.press(&["Enter"]);
    mutt.wait_for("The quick brown fox");
    mutt.press(&["q"]);
    mutt.wait_for("Keep this one");
    mutt.press(&["2", "Enter"]);
    mutt.press(&["s"]);
    mutt.wait_for("Save to mailbox");
    mutt.press(&["C-u"]);
    mutt.type_text("=Kept");
    mutt.press(&["Enter"]);
    mutt.wait_for("Del:1");
    mutt.press(&["3", "Enter"]);
    mutt.press(&["d"]);
    mutt.wait_for("Del:2");
    mutt.press(&["$"]);
    mutt.wait_for("Msgs:1 ");
    mutt.press(&["q"]);
    let quit = mutt.exited();
    if !quit {
        eprintln!("mutt did not quit; the screen:\n{}", mutt.screen());
    }
    quit
}

#[test]
fn mutt_with_scram_over_starttls_records_replays_and_is_served() {
    let dovecot = Dovecot::start_with_mechanisms(MECHANISMS);
    seed(&dovecot);
    let scratch = tempfile::tempdir().unwrap();
    let certs = scratch.path().join("certs");
    let certs_arg = certs.to_string_lossy().into_owned();
    let server_pem = dovecot.dir.path().join("server.pem");
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(
        &dovecot.addr(),
        out.path(),
        &[
            "--client-tls",
            "starttls",
            "--upstream-tls",
            "starttls",
            "--upstream-ca",
            server_pem.to_str().unwrap(),
            "--certs",
            &certs_arg,
        ],
    );
    let ca = certs.join("ca.pem");
    let rc = muttrc(scratch.path(), "record", scope.port(), &ca);
    assert!(use_mutt(&rc, "record"), "mutt quits through imapscope");

    let recorded = wait_for_ended(out.path(), 1);
    scope.terminate();
    let (path, t) = &recorded[0];
    assert_paired(path, t);
    assert_no_secrets(out.path(), &[PASSWORD]);
    let names: Vec<String> = messages(t)
        .iter()
        .filter_map(|m| m.name.clone())
        .map(|n| n.to_ascii_uppercase())
        .collect();
    let starttls = names.iter().position(|n| n == "STARTTLS");
    let authenticate = names.iter().position(|n| n == "AUTHENTICATE");
    assert!(
        matches!((starttls, authenticate), (Some(s), Some(a)) if s < a),
        "STARTTLS, then AUTHENTICATE: {names:?}"
    );
    for needed in ["CREATE", "EXPUNGE", "LOGOUT"] {
        assert!(names.iter().any(|n| n == needed), "{needed}: {names:?}");
    }
    assert!(
        names.iter().any(|n| n == "COPY" || n == "UID COPY"),
        "the save is a COPY: {names:?}"
    );
    let proofs = messages(t)
        .iter()
        .filter(|m| m.redacted.iter().any(|r| r == "sasl-server-proof"))
        .count();
    assert_eq!(proofs, 1, "the server's SCRAM proof is hidden");
    let login = format!("nell:{PASSWORD}");

    // Against a second Dovecot seeded alike: its salt and nonces differ, so the login is
    // answered afresh with --login; everything after it must come out the same.
    let fresh = Dovecot::start_with_mechanisms(MECHANISMS);
    seed(&fresh);
    let replay = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .arg("replay")
        .arg(path)
        .args(["--upstream", &fresh.addr()])
        .args(["--upstream-tls", "starttls"])
        .args(["--upstream-ca", server_pem_of(&fresh).as_str()])
        .args(["--login", &login])
        .env_remove("RUST_LOG")
        .env_remove("IMAPSCOPE_LOGIN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&replay.stdout).into_owned()
        + &String::from_utf8_lossy(&replay.stderr);
    assert!(
        replay.status.success() && report.contains("PASS"),
        "{report}"
    );

    // The same mutt, from the same (empty) local state, against the fake server.
    let (serve, port) = serve_unprobed(
        &["--login", &login, "--certs", &certs_arg, "--rounds", "1"],
        path,
    );
    let rc = muttrc(scratch.path(), "serve", port, &ca);
    let quit = use_mutt(&rc, "serve");
    let served = serve.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&served.stdout).into_owned()
        + &String::from_utf8_lossy(&served.stderr);
    assert!(quit, "mutt quits against serve: {report}");
    assert!(
        served.status.success() && !report.contains("FAIL"),
        "{report}"
    );
}

fn server_pem_of(dovecot: &Dovecot) -> String {
    dovecot
        .dir
        .path()
        .join("server.pem")
        .to_string_lossy()
        .into_owned()
}
