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

/// imapscope's log piped into something that quits (`record ... 2>&1 | head`) loses log
/// lines and nothing else: sessions are relayed, and SIGTERM still ends it. tracing's
/// complaint about the broken pipe used to panic the task that logged, and the shutdown
/// task on SIGTERM was one of them: it never ended.
#[test]
fn a_log_nobody_reads_any_more_costs_nothing_but_the_log() {
    use std::io::{BufRead, BufReader, Read, Write};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = upstream.accept() else {
                return;
            };
            let _ = s.write_all(b"* OK fake ready\r\n");
            let mut line = String::new();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let tag = line.split(' ').next().unwrap_or("*").to_string();
                let _ = s.write_all(format!("{tag} OK done\r\n").as_bytes());
                line.clear();
            }
        }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["record", "--upstream", &upstream_addr, "--out", "none"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first line says it listens; then nobody reads.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("listening"), "{first}");
    drop(stderr);
    for round in 0..2 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        c.write_all(format!("a{round} NOOP\r\n").as_bytes())
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&got).contains(&format!("a{round} OK")) {
            let n = c.read(&mut buf).unwrap_or(0);
            assert!(n > 0, "round {round}: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("imapscope did not end on SIGTERM with its log unread");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    drop(server);
}

/// `--upstream` without a port (or with an unbracketed IPv6 address) is refused at start with
/// the form to use, not found out at every session.
#[test]
fn an_upstream_without_a_port_is_refused_at_start() {
    for (upstream, said) in [
        (
            "localhost",
            "has no port: give HOST:PORT, e.g. localhost:143",
        ),
        (
            "::1:143",
            "an IPv6 address goes in brackets, as in [::1]:143",
        ),
        ("host:imap", "is not a port number"),
    ] {
        for command in ["record", "replay"] {
            let mut args = vec![command, "--upstream", upstream];
            if command == "replay" {
                args.push("capture.jsonl");
            }
            let (ok, text) = imapscope(&args);
            assert!(!ok && text.contains(said), "{command} {upstream}: {text}");
        }
    }
}
