//! The web view (`imapscope web`, `record --web`, `demo`) in a real headless Chromium driven
//! over WebDriver (Debian's chromium and chromium-driver), and its HTTP side checked by hand:
//! the token, path traversal, read-only. Screenshots of each view are kept in
//! `target/web-screenshots/` to be looked at.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An imapscope process whose first stdout line is the web view's URL.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imapscope"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start imapscope");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let url = loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.starts_with("http://") => break line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("imapscope {args:?} printed no URL");
                }
            }
        };
        Served { child, url }
    }

    /// `http://127.0.0.1:PORT`
    fn base(&self) -> String {
        self.url.split("/?").next().unwrap_or_default().to_string()
    }

    fn token(&self) -> String {
        self.url
            .split("token=")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

/// A plain HTTP/1.1 GET: status and body.
fn get(base: &str, target: &str) -> (u16, String) {
    get_with(base, target, &[])
}

/// The status line and headers of a GET.
fn get_head(base: &str, target: &str) -> String {
    let (_, _, head) = request(base, target, &[]);
    head
}

/// A GET with extra request headers.
fn get_with(base: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, body, _) = request(base, target, headers);
    (status, body)
}

fn request(base: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).expect("connect to the web view");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body, head)
}

/// chromedriver on a free port, killed at the end.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is needed for these tests (apt-get install -y chromium \
                 chromium-driver; scripts/test.sh does it)",
            );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--window-size=1280,900", "--disable-dev-shm-usage"],
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS stack (and no OpenSSL) needed.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves what the browser shows as `target/web-screenshots/NAME.png`.
async fn screenshot(c: &Client, name: &str) {
    let dir = repo().join("target/web-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Goes to `url` and waits until the page says its view has rendered.
async fn open(c: &Client, url: &str, view: &str) {
    c.goto(url).await.expect("goto");
    wait_for(c, &format!("body[data-view='{view}'][data-ready='1']")).await;
}

async fn wait_for(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within 20 s: {e}"));
}

/// The text the element `css` shows.
async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.map_or(0, |v| v.len())
}

/// Copies the golden recordings (the Thunderbird capture included) into a fresh directory.
fn golden_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["", "thunderbird"] {
        let from = repo().join("recordings/golden").join(sub);
        let to = dir.path().join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                std::fs::copy(&p, to.join(e.file_name())).unwrap();
            }
        }
    }
    dir
}

fn jsonl_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jsonl") {
                n += 1;
            }
        }
    }
    n
}

/// The token is needed for everything; nothing outside the directory is ever served.
#[test]
fn the_token_is_required_and_nothing_outside_the_directory_is_served() {
    let dir = golden_copy();
    std::fs::write(dir.path().join("../outside-secret.jsonl"), "secret\n").ok();
    let served = Served::start(&[
        "web",
        &dir.path().to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let base = served.base();
    let token = served.token();
    assert_eq!(token.len(), 32, "{}", served.url);
    for target in [
        "/api/sessions".to_string(),
        "/api/events".into(),
        "/api/session/append.jsonl".into(),
        "/raw/append.jsonl".into(),
        "/nothing-here".into(),
        format!("/api/sessions?token={}", &token[..31]),
    ] {
        let (status, body) = get(&base, &target);
        assert_eq!(status, 403, "{target}: {body}");
        assert!(!body.contains("LOGIN"), "{target}");
    }
    // The page's own files hold no data and are served to anyone; nothing sets a cookie,
    // which 127.0.0.1's other services would be sent.
    for (target, file) in [
        ("/", "index.html"),
        ("/app.js", "app.js"),
        ("/app.css", "app.css"),
        ("/?token=wrong", "index.html"),
    ] {
        let (status, body) = get(&base, target);
        assert_eq!(status, 200, "{target}: {body}");
        let asset = std::fs::read_to_string(repo().join("src/web/assets").join(file)).unwrap();
        assert!(body == asset, "{target} is the file as built, nothing more");
    }
    for target in [
        "/".to_string(),
        format!("/?token={token}"),
        format!("/api/sessions?token={token}"),
    ] {
        let head = get_head(&base, &target);
        assert!(
            !head.to_ascii_lowercase().contains("set-cookie"),
            "{target}: {head}"
        );
    }
    let with_header = get_with(&base, "/api/sessions", &[("X-Imapscope-Token", &token)]);
    assert_eq!(with_header.0, 200, "{}", with_header.1);
    let (status, body) = get(&base, &format!("/api/sessions?token={token}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["sessions"].as_array().unwrap().len(),
        jsonl_count(dir.path())
    );
    // Names holding `.jsonl` more than once open too, with their pieces and follow.
    std::fs::create_dir_all(dir.path().join("run.jsonl.d")).unwrap();
    for odd in ["run.jsonl.d/inner.jsonl", "x.jsonl.jsonl"] {
        std::fs::copy(dir.path().join("append.jsonl"), dir.path().join(odd)).unwrap();
        for tail in ["", "/message/2"] {
            let (status, body) = get(&base, &format!("/api/session/{odd}{tail}?token={token}"));
            assert_eq!(status, 200, "{odd}{tail}: {body}");
        }
    }
    let (status, body) = get(&base, &format!("/raw/append.jsonl?token={token}"));
    assert_eq!(status, 200);
    // Streamed (chunked): the transcript's first line is in it.
    assert!(body.contains("{\"type\":\"session\""), "{body}");
    for target in [
        "/raw/../outside-secret.jsonl",
        "/raw/..%2foutside-secret.jsonl",
        "/raw/%2e%2e/outside-secret.jsonl",
        "/raw/%2Fetc%2Fpasswd",
        "/raw//etc/passwd",
        "/api/session/..%2foutside-secret.jsonl",
        "/api/session/%2e%2e%2foutside-secret.jsonl/message/1",
        "/api/replay/..%2f..%2fetc%2fpasswd",
    ] {
        let (status, body) = get(&base, &format!("{target}?token={token}"));
        assert!(status == 404 || status == 400, "{target}: {status} {body}");
        assert!(
            !body.contains("secret") && !body.contains("root:"),
            "{target}"
        );
    }
    let _ = std::fs::remove_file(dir.path().join("../outside-secret.jsonl"));
}

/// The list fills, filtering keeps its filter in the URL, one session reads like `show`, the
/// Thunderbird capture is one lane per connection, statistics and replay diffs render.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_renders_in_chromium() {
    let dir = golden_copy();
    // A replay report with differences: the golden errors session against a Dovecot whose
    // mailbox holds nothing.
    let dovecot = Dovecot::start();
    let report = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["replay", "--json", "--login", &format!("nell:{PASSWORD}")])
        .arg(repo().join("recordings/golden/search-fetch.jsonl"))
        .args(["--upstream", &dovecot.addr()])
        .output()
        .unwrap();
    assert!(!report.status.success(), "an empty mailbox must differ");
    std::fs::write(dir.path().join("empty-mailbox.replay.json"), &report.stdout).unwrap();

    let served = Served::start(&[
        "web",
        &dir.path().to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let driver = Driver::start();
    let c = driver.browser().await;
    let base = served.base();

    // The list.
    open(&c, &served.url, "sessions").await;
    let all = jsonl_count(dir.path());
    assert_eq!(count(&c, "#sessions tr[data-name]").await, all);
    let url = c.current_url().await.unwrap();
    assert!(
        !url.as_str().contains("token="),
        "the token leaves the address bar: {url}"
    );
    screenshot(&c, "sessions").await;

    // Filtering: the sessions that APPENDed, and the filter is in the URL.
    open(&c, &format!("{base}/#/?command=APPEND"), "sessions").await;
    let filtered = count(&c, "#sessions tr[data-name]").await;
    assert!(filtered >= 1 && filtered < all, "{filtered} of {all}");
    let rows = c
        .find_all(Locator::Css("#sessions tr[data-name]"))
        .await
        .unwrap();
    for row in rows {
        let name = row.attr("data-name").await.unwrap().unwrap_or_default();
        let (_, body) = get(
            &base,
            &format!("/api/session/{name}?token={}", served.token()),
        );
        assert!(body.contains("\"APPEND\""), "{name} has no APPEND");
    }
    screenshot(&c, "sessions-filtered").await;

    // One session.
    open(&c, &format!("{base}/#/session/append.jsonl"), "session").await;
    assert!(count(&c, "#session [data-seq]").await > 10);
    let text = text_of(&c, "#session").await;
    assert!(
        text.contains("APPEND") && text.contains("<redacted>"),
        "{text}"
    );
    screenshot(&c, "session").await;

    // The Thunderbird capture: one lane per connection.
    let tb: Vec<String> = std::fs::read_dir(dir.path().join("thunderbird"))
        .unwrap()
        .flatten()
        .map(|e| format!("thunderbird/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    assert_eq!(tb.len(), 5, "{tb:?}");
    open(
        &c,
        &format!("{base}/#/waterfall?names={}", tb.join(",")),
        "waterfall",
    )
    .await;
    assert_eq!(count(&c, "#waterfall g.lane").await, 5);
    assert!(count(&c, "#waterfall rect.bar").await > 20);
    screenshot(&c, "waterfall").await;

    // Statistics.
    open(
        &c,
        &format!("{base}/#/stats?names={}", tb.join(",")),
        "stats",
    )
    .await;
    assert!(count(&c, "#stats tr[data-command='SELECT']").await == 1);
    screenshot(&c, "stats").await;

    // Search across sessions.
    open(&c, &format!("{base}/#/search?q=TRYCREATE"), "search").await;
    screenshot(&c, "search").await;

    // The replay report as a diff.
    open(
        &c,
        &format!("{base}/#/replay/empty-mailbox.replay.json"),
        "replay",
    )
    .await;
    assert!(count(&c, "#replay .diff-line.missing").await > 0);
    screenshot(&c, "replay").await;

    // Bidi controls a peer sent are written out, not obeyed: a user name that would read as
    // admin@example.com, and a response that would read as "a1 OK".
    let spoof = [
        r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"127.0.0.1:1","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#,
        r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* OK ready\r\n"}"#,
        r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"a1","name":"LOGIN","user":"\u202emoc.elpmaxe@nimda","text":"a1 LOGIN \u202emoc.elpmaxe@nimda <redacted>\r\n","redacted":["password"]}"#,
        r#"{"type":"message","seq":3,"t_us":2,"from":"server","kind":"completion","tag":"a1","name":"NO","status":"NO","reply_to":2,"text":"a1 NO \u202eKO 1a\u202c\r\n"}"#,
    ];
    std::fs::write(dir.path().join("spoof.jsonl"), spoof.join("\n") + "\n").unwrap();
    open(&c, &format!("{base}/#/session/spoof.jsonl"), "session").await;
    let shown = text_of(&c, "#session").await;
    assert!(shown.contains("\\u{202e}moc.elpmaxe@nimda"), "{shown}");
    assert!(!shown.contains('\u{202e}'), "{shown}");

    // A second view in the same browser, on another port (`record --web` beside `web`),
    // leaves this one working: each keeps its own token, and neither sets a cookie that the
    // other (or any service on 127.0.0.1) would be sent.
    let second = Served::start(&[
        "web",
        &dir.path().to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]);
    open(&c, &second.url, "sessions").await;
    open(&c, &format!("{base}/#/stats"), "stats").await;
    assert!(c.get_all_cookies().await.unwrap().is_empty());
    drop(second);

    // A wrong token gets 403, in the browser too.
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!("{base}/?token=0123456789abcdef0123456789abcdef"))
        .await
        .unwrap();
    let refused = c.source().await.unwrap();
    assert!(refused.contains("wrong or missing token"), "{refused}");
    screenshot(&c, "wrong-token").await;

    c.close().await.unwrap();
}

/// `record --web`: a client connected through the relay shows as a live session, and what it
/// sends appears in the open session view without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_appears_while_the_client_is_connected() {
    let dovecot = Dovecot::start();
    let out = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let served = Served::start(&[
        "record",
        "--upstream",
        &dovecot.addr(),
        "--listen",
        &listen,
        "--out",
        &out.path().to_string_lossy(),
        "--web",
        "127.0.0.1:0",
    ]);
    let driver = Driver::start();
    let c = driver.browser().await;
    open(&c, &served.url, "sessions").await;
    assert_eq!(count(&c, "#sessions tr[data-name]").await, 0);

    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let mut client = RawClient::connect(port);
    client.read_until("the greeting", |l| l.starts_with(b"* OK"));
    assert!(
        client
            .command("a1", &format!("LOGIN nell {PASSWORD}"))
            .contains("a1 OK")
    );
    // The row appears, marked live, with no reload.
    wait_for(&c, "#sessions tr[data-name].open").await;
    screenshot(&c, "live-list").await;
    // The row may be replaced by a newer version of itself (the live list updates it as the
    // session goes on) between finding it and reading it: read again then.
    let mut name = None;
    for _ in 0..50 {
        let row = c
            .find(Locator::Css("#sessions tr[data-name]"))
            .await
            .unwrap();
        if let Ok(found) = row.attr("data-name").await {
            name = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = name.expect("the live row names its session");
    open(
        &c,
        &format!("{}/#/session/{name}", served.base()),
        "session",
    )
    .await;
    // A command sent now shows up in the open view.
    assert!(client.command("a2", "SELECT INBOX").contains("a2 OK"));
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath(
            "//*[@id='session']//*[contains(text(), 'a2 SELECT INBOX')]",
        ))
        .await
        .expect("the SELECT appears live");
    screenshot(&c, "live-session").await;
    client.send(b"a3 LOGOUT\r\n");
    client.until_eof();
    c.close().await.unwrap();
}

/// `imapscope demo`: with no mail server at hand, the URL it prints shows sessions recorded
/// through the relay, more every few seconds, all of them answered.
#[test]
fn the_demo_records_sessions_to_look_at() {
    let served = Served::start(&["demo", "--web", "127.0.0.1:0", "--every", "1"]);
    let token = served.token();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sessions = loop {
        let (status, body) = get(&served.base(), &format!("/api/sessions?token={token}"));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
        let closed = sessions.iter().filter(|s| s["open"] == false).count();
        if closed >= 12 {
            break sessions;
        }
        assert!(
            Instant::now() < deadline,
            "{} sessions after 30 s",
            sessions.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Two rounds of the same six sessions, each played to its end and answered alike.
    for s in sessions.iter().filter(|s| s["open"] == false) {
        assert_eq!(s["user"], "nell", "{s}");
        assert_eq!(s["end_reason"], "server closed", "{s}");
        assert!(s["commands"].as_u64().unwrap() >= 5, "{s}");
    }
}
