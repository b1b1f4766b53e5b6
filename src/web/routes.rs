//! The web view's HTTP side: the token check, the page, the JSON API and its event streams.
//!
//! Every handler that reads files runs on the blocking pool; the event streams poll the
//! directory (or one file) a few times a second and end when imapscope shuts down, so a
//! browser left open never holds the process.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::WebOptions;
use super::index::{Index, Summary};
use super::query::{self, Digests, Filter};
use super::session;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// How often the event streams look for changes.
const POLL: Duration = Duration::from_millis(300);

/// The header the page sends the token in (event streams and links, which cannot set a
/// header, put it in the query). No cookie: a cookie for 127.0.0.1 goes to every service on
/// every port of 127.0.0.1, and a second imapscope's would overwrite the first's.
const TOKEN_HEADER: &str = "x-imapscope-token";

/// What may be fetched without the token: the page and its script and style, the same in
/// every run and holding no data. The page keeps the token it was opened with (in its
/// origin's storage, which no other port can read) and sends it with every request.
const PUBLIC: &[&str] = &["/", "/app.js", "/app.css"];

struct App {
    token: String,
    index: Index,
    digests: Digests,
    shutdown: CancellationToken,
}

type Shared = Arc<App>;

/// The routes of docs/web.md.
pub fn router(options: WebOptions, shutdown: CancellationToken) -> Router {
    let app = Arc::new(App {
        token: options.token,
        index: Index::new(&options.dir),
        digests: Digests::default(),
        shutdown,
    });
    Router::new()
        .route("/", get(page))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/api/sessions", get(sessions))
        .route("/api/events", get(events))
        .route("/api/session/{*rest}", get(session_routes))
        .route("/api/timeline", get(timeline))
        .route("/api/stats", get(stats))
        .route("/api/search", get(search))
        .route("/api/replays", get(replays))
        .route("/api/replay/{*name}", get(replay))
        .route("/raw/{*name}", get(raw))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .with_state(app)
}

/// Every request but the page's own files carries the token (the `x-imapscope-token`
/// header, or `?token=`), or gets 403.
async fn require_token(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let from_query = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    let from_header = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let good = |t: &Option<String>| t.as_deref().is_some_and(|t| same(t, &app.token));
    let public = PUBLIC.contains(&request.uri().path());
    if !public && !good(&from_query) && !good(&from_header) {
        return (
            StatusCode::FORBIDDEN,
            "wrong or missing token: open the URL imapscope printed at start\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn page() -> Response {
    let mut r = asset(INDEX_HTML, "text/html; charset=utf-8").await;
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn json_response(value: impl serde::Serialize) -> Response {
    axum::Json(value).into_response()
}

/// 404 without echoing the name asked for.
fn not_found(_what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such transcript under the directory served\n",
    )
        .into_response()
}

fn failed(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(failed)
}

async fn sessions(State(app): State<Shared>, Query(filter): Query<Filter>) -> Response {
    let listed = blocking(move || {
        let rows = query::sessions(&app.index, &app.digests, &filter);
        json!({"dir": app.index.dir().display().to_string(), "sessions": rows})
    })
    .await;
    match listed {
        Ok(v) => json_response(v),
        Err(r) => r,
    }
}

/// `event: session` for every session once, then for each that appears or changes. Every
/// open stream shares one listing per poll ([`Index::snapshot`]), and one whose listing has
/// not changed since its last look does no work.
async fn events(State(app): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Poll {
        app: Shared,
        known: std::collections::HashMap<String, Summary>,
        queue: std::collections::VecDeque<Summary>,
        generation: Option<u64>,
        first: bool,
    }
    let state = Poll {
        app,
        known: Default::default(),
        queue: Default::default(),
        generation: None,
        first: true,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(row) = s.queue.pop_front() {
                let event = Event::default()
                    .event("session")
                    .json_data(&row)
                    .unwrap_or_else(|_| Event::default().comment("unencodable"));
                return Some((Ok(event), s));
            }
            if !s.first {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = s.app.shutdown.cancelled() => return None,
                }
            }
            s.first = false;
            let app = s.app.clone();
            let Ok(snapshot) = tokio::task::spawn_blocking(move || app.index.snapshot(POLL)).await
            else {
                continue;
            };
            if s.generation == Some(snapshot.generation) {
                continue;
            }
            s.generation = Some(snapshot.generation);
            for row in snapshot.rows.iter().rev() {
                if s.known.get(&row.name) != Some(row) {
                    s.known.insert(row.name.clone(), row.clone());
                    s.queue.push_back(row.clone());
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(serde::Deserialize)]
struct Piece {
    from: Option<u64>,
    len: Option<usize>,
    after: Option<u64>,
}

/// `NAME`, `NAME/message/SEQ` and `NAME/follow` (a name may hold `/`: subdirectories).
async fn session_routes(
    State(app): State<Shared>,
    Path(rest): Path<String>,
    Query(piece): Query<Piece>,
) -> Response {
    // The name is everything but a known tail: it may hold `.jsonl` more than once
    // (`run.jsonl.d/inner.jsonl`, `x.jsonl.jsonl`).
    let end = if rest.ends_with(".jsonl") {
        rest.len()
    } else if let Some(name) = rest.strip_suffix("/follow") {
        name.len()
    } else {
        match rest.rfind("/message/") {
            Some(at)
                if rest[at + "/message/".len()..]
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                at
            }
            _ => return not_found(&rest),
        }
    };
    let (name, tail) = rest.split_at(end);
    let Some(path) = app.index.path_of(name) else {
        return not_found(name);
    };
    let name = name.to_string();
    if tail.is_empty() {
        return match blocking(move || session::session(&path, &name)).await {
            Ok(Ok(v)) => json_response(v),
            Ok(Err(e)) => failed(e),
            Err(r) => r,
        };
    }
    if tail == "/follow" {
        return follow(app, path, piece.after.unwrap_or(0))
            .await
            .into_response();
    }
    if let Some(seq) = tail.strip_prefix("/message/").and_then(|s| s.parse().ok()) {
        let (from, len) = (piece.from.unwrap_or(0), piece.len.unwrap_or(64 * 1024));
        return match blocking(move || session::message_piece(&path, seq, from, len)).await {
            Ok(Ok(v)) => json_response(v),
            Ok(Err(e)) => failed(e),
            Err(r) => r,
        };
    }
    not_found(&rest)
}

/// `event: item` for each record appended after `after`; `event: end` at the end line.
async fn follow(
    app: Shared,
    path: std::path::PathBuf,
    after: u64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Tail {
        app: Shared,
        path: std::path::PathBuf,
        offset: u64,
        queue: std::collections::VecDeque<Event>,
        ended: bool,
    }
    let state = Tail {
        app,
        path,
        offset: after,
        queue: Default::default(),
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.queue.pop_front() {
                return Some((Ok(e), s));
            }
            if s.ended {
                return None;
            }
            let (path, offset) = (s.path.clone(), s.offset);
            let read = tokio::task::spawn_blocking(move || session::follow(&path, offset)).await;
            if let Ok(Ok((items, next, ended))) = read {
                s.offset = next;
                for item in items {
                    let kind = if item.is_end() { "end" } else { "item" };
                    if let Ok(e) = Event::default().event(kind).json_data(&item) {
                        s.queue.push_back(e);
                    }
                }
                if ended {
                    s.ended = true;
                    continue;
                }
                if !s.queue.is_empty() {
                    continue;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = s.app.shutdown.cancelled() => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn timeline(State(app): State<Shared>, Query(filter): Query<Filter>) -> Response {
    match blocking(move || query::timeline(&app.index, &app.digests, &filter)).await {
        Ok(digests) => json_response(json!({"sessions": digests})),
        Err(r) => r,
    }
}

async fn stats(State(app): State<Shared>, Query(filter): Query<Filter>) -> Response {
    match blocking(move || {
        let digests = query::timeline(&app.index, &app.digests, &filter);
        json!({"sessions": digests.len(), "commands": query::stats(&digests)})
    })
    .await
    {
        Ok(v) => json_response(v),
        Err(r) => r,
    }
}

async fn search(State(app): State<Shared>, Query(filter): Query<Filter>) -> Response {
    match blocking(move || query::search(&app.index, &filter)).await {
        Ok((hits, truncated)) => json_response(json!({"hits": hits, "truncated": truncated})),
        Err(r) => r,
    }
}

/// The `*.replay.json` files under the directory.
async fn replays(State(app): State<Shared>) -> Response {
    let dir = app.index.dir().to_path_buf();
    match blocking(move || {
        let mut out: Vec<Value> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                (name.ends_with(".replay.json") && meta.is_file()).then(|| {
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    json!({"name": name, "size": meta.len(), "mtime": mtime})
                })
            })
            .collect();
        out.sort_by(|a, b| b["mtime"].as_u64().cmp(&a["mtime"].as_u64()));
        out
    })
    .await
    {
        Ok(v) => json_response(json!({"replays": v})),
        Err(r) => r,
    }
}

/// One replay report: `replay --json` prints one JSON object per transcript, one per line.
async fn replay(State(app): State<Shared>, Path(name): Path<String>) -> Response {
    // Reports sit directly in DIR, as `/api/replays` lists them.
    let Some(path) = super::index::safe_path(app.index.dir(), &name, ".replay.json")
        .filter(|_| !name.contains('/'))
    else {
        return not_found(&name);
    };
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(_) => return not_found(&name),
    };
    let reports: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(one) => vec![one],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    };
    json_response(json!({"name": name, "reports": reports}))
}

/// The transcript file itself.
async fn raw(State(app): State<Shared>, Path(name): Path<String>) -> Response {
    let Some(path) = app.index.path_of(&name) else {
        return not_found(&name);
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
            (
                [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")],
                body,
            )
                .into_response()
        }
        Err(_) => not_found(&name),
    }
}
