//! The command line itself: help texts, `ca init` / `ca show`, refused options.

use std::process::Command;

fn imapscope(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(args)
        .output()
        .expect("run imapscope");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_help_has_an_example() {
    for args in [
        &["--help"][..],
        &["record", "--help"],
        &["replay", "--help"],
        &["serve", "--help"],
        &["show", "--help"],
        &["ls", "--help"],
        &["import", "--help"],
        &["import", "rawlog", "--help"],
        &["ca", "--help"],
        &["ca", "init", "--help"],
        &["ca", "show", "--help"],
    ] {
        let (ok, text) = imapscope(args);
        assert!(ok, "{args:?}: {text}");
        assert!(text.contains("Example"), "{args:?} has no example:\n{text}");
    }
}

#[test]
fn ca_init_is_idempotent_and_show_explains_trust() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs = certs.to_str().unwrap();
    let (ok, first) = imapscope(&["ca", "init", "--certs", certs]);
    assert!(ok, "{first}");
    assert!(first.contains("Created a new CA"), "{first}");
    let fingerprint = first
        .lines()
        .find(|l| l.starts_with("SHA-256:"))
        .expect("fingerprint line")
        .to_string();
    let (ok, second) = imapscope(&["ca", "init", "--certs", certs]);
    assert!(ok && second.contains("keeping it"), "{second}");
    assert!(second.contains(&fingerprint), "the same CA is kept");
    let (ok, show) = imapscope(&["ca", "show", "--certs", certs]);
    assert!(ok, "{show}");
    for needle in [
        "Subject:      CN=imapscope interception CA",
        "Manage Certificates > Authorities",
        "update-ca-certificates",
        "ca.crt",
    ] {
        assert!(show.contains(needle), "missing {needle:?} in:\n{show}");
    }
    assert!(!show.contains("PRIVATE KEY"), "the key is never printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::path::Path::new(certs).join("ca-key.pem");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, refused) = imapscope(&["ca", "show", "--certs", certs]);
        assert!(!ok);
        assert!(refused.contains("readable by others"), "{refused}");
    }
}

#[test]
fn non_loopback_listen_needs_a_flag_and_half_starttls_is_refused() {
    let (ok, text) = imapscope(&[
        "record",
        "--upstream",
        "127.0.0.1:1",
        "--listen",
        "0.0.0.0:0",
        "--out",
        "none",
    ]);
    assert!(!ok && text.contains("--allow-remote"), "{text}");
    let (ok, text) = imapscope(&[
        "record",
        "--upstream",
        "127.0.0.1:1",
        "--client-tls",
        "starttls",
        "--upstream-tls",
        "tls",
        "--out",
        "none",
    ]);
    assert!(!ok && text.contains("not supported"), "{text}");
}

/// A git checkout creates `certs/` 0755: imapscope's own default directory is made private
/// when the CA goes in; a directory the user named is only reported, never changed.
#[test]
fn default_directories_are_made_private_others_reported() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for name in ["certs", "shared"] {
        std::fs::create_dir(work.path().join(name)).unwrap();
        std::fs::set_permissions(
            work.path().join(name),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_imapscope"))
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run(&["ca", "init"]);
    assert_eq!(mode(&work.path().join("certs")), 0o700);
    let said = run(&["ca", "init", "--certs", "shared"]);
    assert_eq!(mode(&work.path().join("shared")), 0o755, "left as it was");
    assert!(said.contains("chmod 700 shared"), "{said}");
}

/// `imapscope show rec/ | head` ends as `cat` would when `head` has read enough: by SIGPIPE,
/// quietly. It used to panic ("failed printing to stdout: Broken pipe") with a backtrace.
#[test]
fn show_and_ls_end_quietly_when_the_reader_goes_away() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/recordings/golden/thunderbird");
    for args in [vec!["show", "--full", golden], vec!["ls", golden]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imapscope"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run imapscope");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut first = [0u8; 64];
        stdout.read_exact(&mut first).expect("the first bytes");
        drop(stdout);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("stderr");
        let status = child.wait().expect("wait");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "{args:?} ended with {status:?}: {stderr}"
        );
    }
}
