// imapscope web view: a small hash-routed page over the read-only JSON API of docs/web.md.
// No framework and no build step. Transcripts hold arbitrary bytes, so the DOM is built with
// h()/svg() from text nodes only: nothing untrusted ever goes through innerHTML.
'use strict';

// ---------------------------------------------------------------- DOM helpers

const $ = (sel, root = document) => root.querySelector(sel);
const SVGNS = 'http://www.w3.org/2000/svg';

// Bidi controls from a peer would reorder what is shown around them (a LOGIN user
// "\u202emoc.elpmaxe@nimda" reads as admin@example.com): written out instead, as `show` does.
const BIDI = /[\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const BIDI_ALL = new RegExp(BIDI.source, 'g');
const visible = s => BIDI.test(s) ? s.replace(BIDI_ALL, c => '\\u{' + c.charCodeAt(0).toString(16) + '}') : s;

function attrs(el, a) {
  for (const [k, v] of Object.entries(a || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = visible(String(v));
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : k === 'href' ? String(v) : visible(String(v)));
  }
  return el;
}
function kids(el, list) {
  for (const k of list.flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : visible(String(k))); // strings become text nodes
  }
  return el;
}
const h = (tag, a, ...c) => kids(attrs(document.createElement(tag), a), c);
const svg = (tag, a, ...c) => kids(attrs(document.createElementNS(SVGNS, tag), a), c);
const fill = (el, ...c) => { el.replaceChildren(); return kids(el, c); };

// ---------------------------------------------------------------- formatting

const fmt = {
  secs: us => (us / 1e6).toFixed(3),
  lat: us => us == null ? '—' : us < 1e6 ? (us / 1000).toFixed(2) + ' ms' : (us / 1e6).toFixed(2) + ' s',
  ms: us => us == null ? '—' : (us / 1000).toFixed(2),
  bytes(n) {
    if (n == null) return '—';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  },
  // RFC 3339 UTC to "2026-11-27 10:53:27.679" (the page says UTC where it shows these).
  start: iso => iso ? iso.replace('T', ' ').replace(/(\.\d{3})\d*Z$/, '$1').replace(/Z$/, '') : '—',
  startUs: us => fmt.start(new Date(us / 1000).toISOString()),
  dur(s) {
    if (s == null) return '—';
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    const m = Math.floor(s / 60);
    return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  },
  num: n => n == null ? '—' : Number(n).toLocaleString('en-US'),
  tls: v => v ? v.replace(/^TLSv?/i, '').replace('_', '.') : null,
};

// Hash and API URLs: keep / , : readable, encode everything else.
const enc = v => encodeURIComponent(v).replace(/%2F/gi, '/').replace(/%2C/gi, ',').replace(/%3A/gi, ':').replace(/%40/gi, '@');
function qs(obj) {
  const parts = [];
  for (const [k, v] of Object.entries(obj)) if (v != null && v !== '') parts.push(k + '=' + enc(v));
  return parts.length ? '?' + parts.join('&') : '';
}
const encName = n => n.split('/').map(encodeURIComponent).join('/');
const sessionHref = (name, seq) => '#/session/' + encName(name) + (seq != null ? '?seq=' + seq : '');
// "...-000002.jsonl" -> "#2", the connection number within the imapscope process.
const sessNo = name => { const m = /-0*(\d+)(?:_\d+)?\.jsonl$/.exec(name); return m ? '#' + m[1] : ''; };

// ---------------------------------------------------------------- fetch + error banner

// The token this page was opened with (`?token=` in the printed URL), kept in this origin's
// storage for reloads and new tabs: no cookie, since a cookie for 127.0.0.1 would go to every
// service on any port of it. Sent with every request; event streams and links, which cannot
// carry a header, put it in the query.
const TOKEN_KEY = 'imapscope-token';
const token = (() => {
  const given = new URLSearchParams(location.search).get('token');
  try {
    if (given) localStorage.setItem(TOKEN_KEY, given);
    return given || localStorage.getItem(TOKEN_KEY) || '';
  } catch (e) {
    return given || '';
  }
})();
const withToken = url => url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);

class HttpError extends Error {
  constructor(status, text) { super(text); this.status = status; }
}
async function api(url) {
  let r;
  try {
    r = await fetch(url, { headers: { Accept: 'application/json', 'X-Imapscope-Token': token }, credentials: 'omit' });
  } catch (e) {
    throw new HttpError(0, 'network error: ' + e.message + ' (is imapscope still running?)');
  }
  if (!r.ok) throw new HttpError(r.status, ((await r.text().catch(() => '')) || r.statusText).trim());
  return r.json();
}
function showError(err) {
  const b = $('#banner');
  const what = err instanceof HttpError ? (err.status ? `HTTP ${err.status}: ` : '') + err.message : String(err && err.message || err);
  const hint = err && err.status === 403 ? ' — open the address imapscope printed at start (…/?token=…) to get access.' : '';
  b.replaceChildren(h('span', { class: 'icon', text: '✖' }), h('span', { text: what + hint }),
    h('button', { type: 'button', class: 'close', title: 'dismiss', onclick: () => { b.hidden = true; } }, '×'));
  b.hidden = false;
  if (err && !(err instanceof HttpError)) console.error(err);
}

// ---------------------------------------------------------------- router

// A view gets a ctx: its params, a cleanup list (EventSources, timers) run when it is left,
// and ctx.api(), which never resolves once the view is gone so stale responses are dropped.
let current = null;
const routes = [
  [/^\/(?:sessions)?$/, 'sessions', viewSessions],
  [/^\/session\/(.+)$/, 'session', viewSession],
  [/^\/waterfall$/, 'waterfall', viewWaterfall],
  [/^\/stats$/, 'stats', viewStats],
  [/^\/search$/, 'search', viewSearch],
  [/^\/replays$/, 'replays', viewReplays],
  [/^\/replay\/(.+)$/, 'replay', viewReplay],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const i = raw.indexOf('?');
  return { path: i < 0 ? raw : raw.slice(0, i), params: new URLSearchParams(i < 0 ? '' : raw.slice(i + 1)) };
}

function route() {
  if (current) { current.alive = false; current.cleanup.forEach(f => f()); }
  const { path, params } = parseHash();
  let found = null;
  for (const [re, name, fn] of routes) {
    const m = re.exec(path);
    if (m) { found = [name, fn, m.slice(1).map(x => { try { return decodeURIComponent(x); } catch { return x; } })]; break; }
  }
  const main = $('#main');
  main.replaceChildren();
  $('#banner').hidden = true;
  tooltip.hide();
  delete document.body.dataset.ready;
  const ctx = current = { params, cleanup: [], alive: true, main };
  ctx.api = url => api(url).then(v => ctx.alive ? v : new Promise(() => {}), e => ctx.alive ? Promise.reject(e) : new Promise(() => {}));
  if (!found) {
    document.body.dataset.view = 'notfound';
    main.append(h('p', { class: 'empty' }, 'No such view. ', h('a', { href: '#/' }, 'Back to the sessions.')));
    ready(ctx);
    return;
  }
  const [name, fn, args] = found;
  document.body.dataset.view = name;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === name || (name === 'session' && a.dataset.nav === 'sessions') || (name === 'replay' && a.dataset.nav === 'replays'));
  Promise.resolve().then(() => fn(ctx, ...args)).catch(err => {
    if (!ctx.alive) return;
    showError(err);
    main.append(h('p', { class: 'empty' }, 'Could not load this view.'));
    ready(ctx); // an error is a rendered state too: tests waiting for "ready" see the banner
  });
}
function ready(ctx) { if (ctx === current) document.body.dataset.ready = '1'; }
// Put view state into the hash without re-rendering (filters being typed, waterfall zoom).
function setHash(hash) { history.replaceState(null, '', location.pathname + location.search + hash); }

// ---------------------------------------------------------------- live event stream

// One EventSource for the whole page: it drives the #live indicator and the session list.
const live = { subs: new Set(), es: null, retry: 1000 };
function startLive() {
  const el = $('#live');
  const es = live.es = new EventSource(withToken('/api/events'));
  const show = () => {
    const st = es.readyState === EventSource.OPEN ? 'live' : es.readyState === EventSource.CONNECTING ? 'connecting' : 'offline';
    el.textContent = st;
    el.className = st === 'live' ? 'on' : st === 'connecting' ? 'wait' : 'off';
  };
  es.onopen = () => { live.retry = 1000; show(); };
  es.onerror = () => {
    show();
    // The browser retries by itself while CONNECTING; a CLOSED stream (403, 5xx) we retry ourselves.
    if (es.readyState === EventSource.CLOSED) {
      setTimeout(startLive, live.retry);
      live.retry = Math.min(live.retry * 2, 30000);
    }
  };
  es.addEventListener('session', e => {
    let s;
    try { s = JSON.parse(e.data); } catch { return; }
    for (const f of live.subs) f(s);
  });
  show();
}

// ---------------------------------------------------------------- sessions view

const FILTERS = [
  ['user', 'user', 'nell'], ['client', 'client', '127.0.0.1'], ['upstream', 'upstream', 'imap.example.com'],
  ['command', 'command', 'FETCH'], ['status', 'status', 'NO'], ['mailbox', 'mailbox', 'INBOX'], ['q', 'text', 'anything said'],
];
const SIMPLE = ['user', 'client', 'upstream']; // fields a Summary carries: matched here for live rows

function datalists() {
  const cmds = ['LOGIN', 'AUTHENTICATE', 'SELECT', 'EXAMINE', 'FETCH', 'UID FETCH', 'STORE', 'UID STORE', 'SEARCH', 'UID SEARCH', 'APPEND', 'COPY', 'MOVE', 'EXPUNGE', 'LIST', 'STATUS', 'IDLE', 'NOOP', 'CAPABILITY', 'LOGOUT', 'STARTTLS', 'COMPRESS', 'ID', 'NAMESPACE', 'GETQUOTAROOT', 'ENABLE', 'CLOSE'];
  return [h('datalist', { id: 'dl-command' }, cmds.map(c => h('option', { value: c }))),
    h('datalist', { id: 'dl-status' }, ['OK', 'NO', 'BAD', 'BYE'].map(c => h('option', { value: c })))];
}

// The sessions filter bar: onApply(values) on submit and on Clear (typing is debounced by the caller).
function filterForm(id, values, onApply, submitLabel) {
  const form = h('form', { id, class: 'filterbar', autocomplete: 'off' },
    FILTERS.map(([k, label, ph]) => h('label', { class: 'f-' + k }, h('span', { text: label }),
      h('input', { name: k, value: values[k] || '', placeholder: ph, spellcheck: 'false', list: k === 'command' || k === 'status' ? 'dl-' + k : null }))),
    h('button', { type: 'submit', class: 'primary' }, submitLabel),
    h('button', { type: 'button', onclick: () => { for (const i of form.elements) if (i.tagName === 'INPUT') i.value = ''; onApply(read()); } }, 'Clear'),
    datalists());
  const read = () => Object.fromEntries(FILTERS.map(([k]) => [k, form.elements[k].value.trim()]));
  form.addEventListener('submit', e => { e.preventDefault(); onApply(read()); });
  return { form, read };
}

async function viewSessions(ctx) {
  const filter = Object.fromEntries(FILTERS.map(([k]) => [k, ctx.params.get(k) || '']));
  const rows = new Map();      // name -> Summary, as last seen
  const trs = new Map();       // name -> <tr>
  const seen = new Map();      // name -> size, for every session the event stream told us about
  const selected = new Set();
  let timer = null, typing = null;

  const { form, read } = filterForm('filter', filter, v => { clearTimeout(typing); apply(v); }, 'Filter');
  form.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => apply(read()), 400); });
  ctx.cleanup.push(() => { clearTimeout(timer); clearTimeout(typing); clearTimeout(flushing); });

  const count = h('span', { class: 'count' });
  const wfBtn = h('button', { type: 'button', onclick: () => { location.hash = '#/waterfall' + qs({ names: pick().slice(0, 100).join(',') }); } });
  const stBtn = h('button', { type: 'button', onclick: () => {
    location.hash = selected.size ? '#/stats' + qs({ names: [...selected].join(',') }) : '#/stats' + qs(filter);
  } });
  const allBox = h('input', { type: 'checkbox', title: 'select all shown', onchange: () => {
    for (const n of rows.keys()) allBox.checked ? selected.add(n) : selected.delete(n);
    for (const [n, tr] of trs) { tr.querySelector('input').checked = selected.has(n); tr.classList.toggle('sel', selected.has(n)); }
    updateBar();
  } });
  const tbody = h('tbody');
  const table = h('table', { id: 'sessions', class: 'grid' },
    h('thead', {}, h('tr', {},
      h('th', { class: 'cb' }, allBox), h('th', { class: 'r', text: '#', title: 'connection number within its imapscope process' }), h('th', { text: 'start (UTC)' }), h('th', { class: 'r', text: 'duration' }),
      h('th', { text: 'client' }), h('th', { text: 'user' }), h('th', { text: 'upstream' }),
      h('th', { text: 'TLS', title: 'client leg / upstream leg' }), h('th', { class: 'r', text: 'cmds' }),
      h('th', { class: 'r', text: 'NO' }), h('th', { class: 'r', text: 'BAD' }),
      h('th', { class: 'r', text: '↑ from client', title: 'bytes from client' }), h('th', { class: 'r', text: '↓ from server', title: 'bytes from server' }),
      h('th', { text: 'state' }))),
    tbody);
  const empty = h('p', { class: 'empty', hidden: true }, 'No sessions match.');
  ctx.main.append(form, h('div', { class: 'toolbar' }, count, h('span', { class: 'grow' }), wfBtn, stBtn), table, empty);

  const pick = () => selected.size ? [...selected] : sortedNames();
  const sortedNames = () => [...rows.values()].sort(newestFirst).map(s => s.name);
  function updateBar() {
    const n = rows.size, open = [...rows.values()].filter(s => s.open).length;
    count.textContent = `${n} session${n === 1 ? '' : 's'}${open ? ` · ${open} live` : ''}` + (selected.size ? ` · ${selected.size} selected` : '');
    const which = selected.size ? `${selected.size} selected` : `all ${n} shown`;
    wfBtn.textContent = `Waterfall (${which})`;
    stBtn.textContent = `Stats (${which})`;
    wfBtn.disabled = stBtn.disabled = n === 0 && !selected.size;
    allBox.checked = n > 0 && [...rows.keys()].every(k => selected.has(k));
    empty.hidden = n > 0;
  }

  function row(s) {
    const box = h('input', { type: 'checkbox', checked: selected.has(s.name), onchange: () => {
      box.checked ? selected.add(s.name) : selected.delete(s.name);
      tr.classList.toggle('sel', box.checked);
      updateBar();
    } });
    const tls = s.tls || {};
    const legs = [fmt.tls(tls.client), fmt.tls(tls.upstream)];
    const tr = h('tr', { 'data-name': s.name, class: [s.open ? 'open' : '', selected.has(s.name) ? 'sel' : '', s.errors ? 'has-err' : ''].join(' ').trim() || null },
      h('td', { class: 'cb' }, box),
      h('td', { class: 'r dim', title: s.name, text: sessNo(s.name) }),
      h('td', { class: 'mono' }, h('a', { href: sessionHref(s.name), title: s.name, text: fmt.start(s.start) })),
      h('td', { class: 'r mono', text: fmt.dur(s.duration_s) + (s.open ? '…' : '') }),
      h('td', { class: 'mono', text: s.client || '—' }),
      h('td', { text: s.user || '—' }),
      h('td', { class: 'mono', text: s.upstream || '—' }),
      h('td', { class: 'mono tls', title: `client leg: ${tls.client || 'plain'}; upstream leg: ${tls.upstream || 'plain'}` + (s.compress ? '; COMPRESS=DEFLATE' : '') },
        legs.map((v, i) => [i ? h('span', { class: 'sep' }, ' / ') : null, h('span', { class: v ? 'tls-on' : 'tls-off', text: v || 'plain' })]),
        s.compress ? h('span', { class: 'badge z', text: 'Z' }) : null),
      h('td', { class: 'r', text: fmt.num(s.commands) }),
      h('td', { class: 'r' + (s.no ? ' st-NO' : ' dim'), text: s.no || 0 }),
      h('td', { class: 'r' + (s.bad ? ' st-BAD' : ' dim'), text: s.bad || 0 }),
      h('td', { class: 'r mono', title: fmt.num(s.bytes_from_client) + ' bytes', text: fmt.bytes(s.bytes_from_client) }),
      h('td', { class: 'r mono', title: fmt.num(s.bytes_from_server) + ' bytes', text: fmt.bytes(s.bytes_from_server) }),
      h('td', { class: 'state', title: s.end_reason || null }, s.open ? h('span', { class: 'livebadge', text: 'live' }) : h('span', { class: 'dim', text: s.end_reason || '' }),
        s.errors ? h('span', { class: 'badge err', text: `${s.errors} error${s.errors > 1 ? 's' : ''}` }) : null),
    );
    return tr;
  }

  function newestFirst(a, b) { return (b.start_us || 0) - (a.start_us || 0) || (a.name < b.name ? 1 : -1); }
  function renderAll() {
    trs.clear();
    const list = [...rows.values()].sort(newestFirst);
    tbody.replaceChildren(...list.map(s => { const tr = row(s); trs.set(s.name, tr); return tr; }));
    updateBar();
  }
  // Insert or replace one row in place, keeping newest first (no full re-render per event).
  function upsert(s) {
    rows.set(s.name, s);
    const tr = row(s), old = trs.get(s.name);
    trs.set(s.name, tr);
    if (old) old.replaceWith(tr);
    else {
      let before = null;
      for (const el of tbody.children) { if (newestFirst(s, rows.get(el.dataset.name)) < 0) { before = el; break; } }
      tbody.insertBefore(tr, before);
      tr.classList.add('flash');
    }
    updateBar();
  }
  // Without updateBar: the caller updates the bar once for a batch.
  function remove(name) {
    rows.delete(name); selected.delete(name);
    const tr = trs.get(name); if (tr) tr.remove();
    trs.delete(name);
  }

  // quiet: a background refresh (live events) leaves the "ready" flag alone.
  let gen = 0, loading = 0;
  async function load(quiet) {
    const mine = ++gen;
    if (!quiet) delete document.body.dataset.ready;
    loading++;
    let d;
    try { d = await ctx.api('/api/sessions' + qs(filter)); } finally { loading--; flushSoon(); }
    if (mine !== gen) return; // a newer filter was applied meanwhile
    rows.clear();
    for (const s of d.sessions || []) rows.set(s.name, s);
    for (const n of [...selected]) if (!rows.has(n)) selected.delete(n);
    renderAll();
    ready(ctx);
  }
  function apply(v) {
    const changed = FILTERS.some(([k]) => (v[k] || '') !== filter[k]);
    Object.assign(filter, v);
    const q = qs(filter);
    setHash(q ? '#/sessions' + q : '#/');
    if (changed) load().catch(e => { showError(e); ready(ctx); });
  }
  // At most one refresh per 800 ms, and never postponed by more events (a busy live session).
  const refreshSoon = () => { if (!timer) timer = setTimeout(() => { timer = null; load(true).catch(showError); }, 800); };

  const deep = () => ['command', 'status', 'mailbox', 'q'].some(k => filter[k]);
  const matches = s => SIMPLE.every(k => !filter[k] || String(s[k] || '').toLowerCase().includes(filter[k].toLowerCase()));
  // Events come in bursts (every session once when the stream opens, which may be before the
  // list has loaded): they are taken a batch at a time, and not while the list is loading,
  // so a burst of n sessions costs one rendering of the table, not n insertions into it.
  const pending = new Map();
  let flushing = null;
  function onSession(s) {
    pending.set(s.name, s);
    flushSoon();
  }
  function flushSoon() { if (!flushing && pending.size) flushing = setTimeout(flush, 50); }
  function flush() {
    flushing = null;
    if (loading) return; // load() flushes when it is done
    const upserts = [];
    let removed = false;
    for (const s of pending.values()) {
      const old = rows.get(s.name);
      const known = seen.get(s.name);
      seen.set(s.name, s.size);
      if (old && JSON.stringify(old) === JSON.stringify(s)) continue;
      if (!matches(s)) { if (old) { remove(s.name); removed = true; } continue; }
      if (old || !deep()) { upserts.push(s); continue; }
      // A session not in the list, and the filter looks inside transcripts: ask the server.
      if (known !== s.size) refreshSoon();
    }
    pending.clear();
    if (upserts.length > 20) {
      for (const s of upserts) rows.set(s.name, s);
      renderAll();
    } else {
      for (const s of upserts) upsert(s);
      if (removed && !upserts.length) updateBar();
    }
  }
  live.subs.add(onSession);
  ctx.cleanup.push(() => live.subs.delete(onSession));
  await load();
}

// ---------------------------------------------------------------- one session

const HEAD_LINES = 12, PIECE = 65536, LOAD_ALL_MAX = 4 << 20;
const SIDE = { client: 'C:', server: 'S:' };
const TYPE_BADGE = { greeting: 'greeting', continuation: 'continue', 'continuation-request': 'continue', sasl: 'SASL', 'sasl-data': 'SASL', 'idle-done': 'DONE', unknown: 'unknown' };

// Protocol text for display: CRLF ends lines, the message's last line ending is implied.
const clean = t => (t || '').replace(/\r?\n$/, '').replace(/\r\n/g, '\n');

// Text into a <pre>: one text node, except that <redacted>, \xNN escapes (non-UTF-8 bytes)
// and control characters (shown as \xNN too) get their own style.
const CTRL = /[\x00-\x08\x0b-\x1f\x7f]/;
function fillText(el, str, binary, redacted) {
  el.replaceChildren();
  const ctrl = CTRL.test(str);
  if ((!binary && !redacted && !ctrl) || str.length > 300000) { el.textContent = visible(str); return; }
  const alts = [];
  if (redacted) alts.push('<redacted>');
  if (binary) alts.push('(?:\\\\x[0-9a-fA-F]{2})+');
  if (ctrl) alts.push('[\\x00-\\x08\\x0b-\\x1f\\x7f]+');
  str.split(new RegExp('(' + alts.join('|') + ')')).forEach((part, i) => {
    if (!part) return;
    if (!(i % 2)) return el.append(visible(part));
    if (part === '<redacted>') return el.append(h('span', { class: 'redacted', title: 'replaced by imapscope before writing' }, part));
    const shown = CTRL.test(part[0]) ? [...part].map(c => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0')).join('') : part;
    el.append(h('span', { class: 'esc' }, shown));
  });
}

// The text of one message: the first lines, and controls to see the rest. Beyond the 8 KiB
// head the API sent, the rest comes in 64 KiB pieces, only when asked for.
function messageBody(it, name) {
  const pre = h('pre', { class: 'txt' });
  const ctl = h('div', { class: 'ctl' });
  const el = h('div', { class: 'body' }, pre, ctl);
  let text = it.text || '', loaded = null, expanded = false, busy = false;
  const redacted = !!(it.redacted && it.redacted.length) || text.includes('<redacted>');
  const lines = () => clean(text).split('\n');
  const complete = () => !it.more || (loaded != null && loaded >= it.bytes);

  // The first line (command or response) styled apart from what follows (literal data).
  const first = h('span', { class: 'l1' }), rest = h('span', { class: 'lit' });
  pre.append(first, rest);
  function drawText() {
    const ls = lines();
    const cut = !expanded && ls.length > HEAD_LINES + 1;
    // A long expanded text scrolls in its own box, so the exchange around it stays in reach.
    el.classList.toggle('tall', expanded && ls.length > 60);
    fillText(first, ls[0], it.binary, redacted);
    fillText(rest, ls.length > 1 ? '\n' + (cut ? ls.slice(1, HEAD_LINES) : ls.slice(1)).join('\n') : '', it.binary, redacted);
    drawCtl();
  }
  function drawCtl() {
    ctl.replaceChildren();
    const n = lines().length, cut = !expanded && n > HEAD_LINES + 1;
    const btn = (label, f, title) => h('button', { type: 'button', class: 'link', title, disabled: busy, onclick: f }, label);
    if (!expanded && (cut || !complete())) {
      ctl.append(h('span', { class: 'dim', text: (cut ? `… ${fmt.num(n - HEAD_LINES)} more lines` : '…') + (complete() ? '' : ` · ${fmt.num(it.bytes)} bytes in all`) }),
        complete() ? btn(`show all (${fmt.num(it.bytes)} bytes)`, () => { expanded = true; drawText(); })
          : btn('show more (first 64 KiB)', () => { expanded = true; fetchPieces(PIECE); }));
    } else if (expanded) {
      if (!complete()) {
        const have = loaded == null ? Math.min(it.bytes, 8192) : loaded;
        ctl.append(h('span', { class: 'dim', text: `showing ${fmt.num(have)} of ${fmt.num(it.bytes)} bytes` }),
          btn('next 64 KiB', () => fetchPieces(PIECE)),
          it.bytes - have <= LOAD_ALL_MAX ? btn(`load the rest (${fmt.bytes(it.bytes - have)})`, () => fetchPieces(LOAD_ALL_MAX))
            : btn('load 4 MiB more', () => fetchPieces(LOAD_ALL_MAX), 'a large message is never fetched whole by itself'));
      }
      if (n > HEAD_LINES + 1 || !complete()) ctl.append(btn('collapse', () => { expanded = false; drawText(); }));
    }
    if (busy) ctl.append(h('span', { class: 'spin', text: 'loading…' }));
  }
  // Fetch up to `want` more bytes, 64 KiB at a time (the first piece replaces the 8 KiB head).
  async function fetchPieces(want) {
    busy = true; drawCtl();
    const stop = (loaded == null ? 0 : loaded) + want;
    try {
      while (!complete()) {
        const from = loaded == null ? 0 : loaded;
        if (from >= stop) break;
        const p = await api(`/api/session/${encName(name)}/message/${it.seq}?from=${from}&len=${PIECE}`);
        text = loaded == null ? p.text : text + p.text;
        loaded = (p.from || from) + (p.len || 0);
        if (p.total != null) it.bytes = Math.max(it.bytes || 0, p.total);
        if (p.binary) it.binary = true;
        if (!p.len) { loaded = it.bytes; break; } // nothing more to read: stop, never loop
      }
    } catch (e) { showError(e); }
    busy = false; drawText();
  }
  drawText();
  // A live `part`: the message grew; only the byte counts and controls change.
  el.grow = n => { it.bytes = (it.bytes || 0) + n; it.more = true; drawCtl(); };
  return el;
}

// One transcript item as a row: time, side, text, and on the right what it answers.
// Rows of server responses that answer a command in flight are indented under it.
function itemRow(it, S) {
  const t = it.t_us != null ? fmt.secs(it.t_us) : '';
  const time = h('a', { class: 't', href: it.kind === 'message' ? sessionHref(S.name, it.seq) : null, title: it.kind === 'message' ? `seq ${it.seq} · t=${it.t_us} µs` : null, text: t });
  if (it.kind === 'message') {
    const resp = it.from === 'server' && ((it.in_flight && it.in_flight.length) || it.reply_to != null);
    const cont = it.from === 'client' && it.type !== 'command' && it.reply_to != null; // SASL data, DONE
    const cls = ['it', 'msg', it.from, 'type-' + it.type, resp || cont ? 'in' : '', it.status ? 's-' + it.status : '', it.notes && it.notes.length ? 'has-notes' : ''];
    const meta = h('div', { class: 'meta' });
    const body = messageBody(it, S.name);
    if (it.notes) for (const n of it.notes) body.append(h('div', { class: 'msg-note' }, h('span', { class: 'icon', text: '⚠' }), ' ' + n));
    if (TYPE_BADGE[it.type]) meta.append(h('span', { class: 'badge type', text: TYPE_BADGE[it.type] }));
    if (it.binary) meta.append(h('span', { class: 'badge bin', text: 'binary', title: 'not UTF-8: bytes shown as \\xNN' }));
    if (it.redacted && it.redacted.length) meta.append(h('span', { class: 'badge red', text: 'redacted: ' + it.redacted.join(', ') }));
    if (it.bytes >= 1024) meta.append(h('span', { class: 'size dim', text: fmt.bytes(it.bytes) }));
    // Several commands in flight (pipelining): say which ones this response could belong to.
    if (it.in_flight && it.in_flight.length > 1) meta.append(h('span', { class: 'inflight dim', title: 'commands in flight: seq ' + it.in_flight.join(', '), text: '↳ ' + it.in_flight.map(q => (S.bySeq.get(q) || {}).tag || q).join(' ') }));
    if (it.type === 'completion' && it.latency_us != null) {
      meta.append(h('a', { class: 'lat st-' + it.status, href: it.reply_to != null ? sessionHref(S.name, it.reply_to) : null, title: `latency of ${it.command || 'the command'} (seq ${it.reply_to})`, text: fmt.lat(it.latency_us) }));
    }
    if (it.type === 'command') meta.append(S.outcome(it));
    const row = h('div', { class: cls.join(' ').replace(/\s+/g, ' ').trim(), 'data-seq': it.seq },
      time, h('span', { class: 'side', text: SIDE[it.from] || '?' }), body, meta);
    row.body = body;
    return row;
  }
  // Everything else: notes, errors, TLS, COMPRESS, drops, the end.
  const line = (cls, icon, text, extra) => h('div', { class: 'it ' + cls }, time,
    h('span', { class: 'side', text: it.from ? SIDE[it.from] : '' }),
    h('div', { class: 'body' }, icon ? h('span', { class: 'icon', text: icon }) : null, h('span', { class: 'label', text }), extra || null), h('div', { class: 'meta' }));
  switch (it.kind) {
    case 'note': return line('note', 'ℹ', 'note: ' + (it.text || it.note || ''));
    case 'error': return line('error', '✖', `error${it.during ? ' during ' + it.during : ''}: ${it.message || ''}`);
    case 'dropped': {
      const pre = h('pre', { class: 'txt' });
      if (it.text) fillText(pre, clean(it.text), false, true);
      return line('dropped', '⊘', `dropped ${it.bytes != null ? it.bytes + ' bytes' : ''} from ${it.from || '?'}, not relayed: ${it.reason || ''}`, it.text ? pre : null);
    }
    case 'tls': return line('sep', null, `TLS on the ${it.leg} leg: ${it.version || ''} ${it.cipher || ''}`);
    case 'compress': return line('sep', null, `COMPRESS ${it.algorithm || 'DEFLATE'} from here on`);
    case 'opaque': return line('sep', null, `${fmt.num(it.bytes != null ? it.bytes : it.len)} opaque bytes from ${it.from || '?'}${it.what ? ' (' + it.what + ')' : ''}, not decoded`);
    case 'end': return line('sep end', null, `closed at ${fmt.secs(it.t_us || 0)} s: ${it.reason || ''} · ${fmt.num(it.bytes_from_client)} bytes from client, ${fmt.num(it.bytes_from_server)} from server`);
    default: return line('sep', null, it.kind + ' ' + JSON.stringify(it));
  }
}

// State shared by the rows of one session: which command a response answers, outcome badges.
function sessionState(name) {
  const S = { name, bySeq: new Map(), outcomes: new Map(), ended: false };
  S.outcome = cmd => {
    // Filled in when the completion arrives; a live session shows the command as still waiting.
    const el = h('span', { class: 'outcome pending dim', text: S.open ? 'waiting…' : '' });
    S.outcomes.set(cmd.seq, el);
    return el;
  };
  S.answer = comp => {
    const el = S.outcomes.get(comp.reply_to);
    if (!el) return;
    el.className = 'outcome st-' + comp.status; // no longer pending
    el.textContent = `→ ${comp.status || comp.name} ${fmt.lat(comp.latency_us)}`;
  };
  // The session ended: whatever is still waiting was never answered (the end line's `unanswered`).
  S.unanswered = () => {
    for (const el of S.outcomes.values()) if (el.classList.contains('pending')) { el.className = 'outcome unanswered'; el.textContent = 'no answer'; }
  };
  return S;
}

function sessionHeader(d, S) {
  const s = d.session || {}, e = d.end;
  const lastT = d.items.length ? d.items[d.items.length - 1].t_us : 0;
  const status = h('span', { class: d.open ? 'livebadge' : 'badge closed', text: d.open ? 'live' : 'closed' });
  const user = (e && e.user) || (d.items.find(i => i.user) || {}).user;
  const fact = (k, v, cls) => [h('dt', { text: k }), h('dd', { class: cls || null }, v == null || v === '' ? '—' : v)];
  const facts = h('dl', { class: 'facts' },
    fact('client', s.client, 'mono'), fact('listen', s.listen, 'mono'), fact('upstream', s.upstream, 'mono'),
    fact('start (UTC)', fmt.start(s.start), 'mono'), fact('user', user),
    fact('duration', e ? fmt.secs(e.t_us) + ' s' : `${fmt.secs(lastT)} s so far`, 'mono'),
    fact('end', e ? e.reason : 'still open (or imapscope was killed)'),
    fact('bytes', e ? `${fmt.num(e.bytes_from_client)} from client, ${fmt.num(e.bytes_from_server)} from server` : null),
    fact('messages', e && e.messages != null ? fmt.num(e.messages) : String(d.items.filter(i => i.kind === 'message').length)),
    e && e.unanswered && e.unanswered.length ? fact('unanswered', e.unanswered.map((q, i) => [i ? ', ' : '', h('a', { href: sessionHref(S.name, q), text: 'seq ' + q })])) : null,
    e && e.lost_bytes ? fact('lost', fmt.num(e.lost_bytes) + ' bytes of transcript not written', 'st-BAD') : null,
    fact('recorded by', `imapscope ${s.imapscope || '?'}, format v${s.version || '?'}${s.redaction === false ? ', secrets NOT redacted' : ', credentials redacted'}`));
  const tls = (d.tls || []).map(t => h('div', { class: 'tlsline' },
    h('span', { class: 'leg', text: t.leg + ' leg' }),
    h('span', { class: 'mono', text: [t.version, t.cipher].filter(Boolean).join(' · ') }),
    t.sni ? h('span', {}, 'SNI ', h('b', { text: t.sni })) : null,
    t.alpn ? h('span', { text: 'ALPN ' + t.alpn }) : null,
    t.subject ? h('span', { title: [t.issuer && 'issuer ' + t.issuer, t.sans && t.sans.join(' '), t.sha256 && 'SHA-256 ' + t.sha256].filter(Boolean).join('\n') }, 'cert ', h('span', { class: 'mono', text: t.subject })) : null,
    t.verified ? h('span', { class: /not verified/.test(t.verified) ? 'st-BAD' : 'st-OK', text: t.verified }) : null));
  const comp = d.items.find(i => i.kind === 'compress');
  const cz = e && e.compressed;
  const compress = comp ? h('div', { class: 'tlsline' }, h('span', { class: 'leg', text: 'COMPRESS' }),
    h('span', { text: `${comp.algorithm || 'DEFLATE'} from ${fmt.secs(comp.t_us)} s` }),
    cz ? h('span', { class: 'dim', text: `client ${fmt.num(cz.client_compressed)} → ${fmt.num(cz.client_inflated)} B, server ${fmt.num(cz.server_compressed)} → ${fmt.num(cz.server_inflated)} B` }) : null) : null;
  return h('header', { class: 'sess-head' },
    h('h1', {}, `session ${s.id != null ? '#' + s.id : sessNo(S.name)} · `, h('span', { class: 'mono', text: `${s.client || '?'} → ${s.upstream || '?'}` }), ' ', status),
    h('div', { class: 'links' }, h('span', { class: 'mono dim', text: S.name }),
      h('a', { href: withToken('/raw/' + encName(S.name)), target: '_blank', rel: 'noopener noreferrer' }, 'raw JSONL'),
      h('a', { href: '#/waterfall' + qs({ names: S.name }) }, 'waterfall'),
      h('a', { href: '#/stats' + qs({ names: S.name }) }, 'stats')),
    facts, tls.length ? h('div', { class: 'tls' }, tls) : h('div', { class: 'tlsline dim' }, h('span', { class: 'leg', text: 'TLS' }), 'none: plain IMAP on both legs'), compress);
}

async function viewSession(ctx, name) {
  const d = await ctx.api('/api/session/' + encName(name));
  const S = sessionState(name);
  S.open = d.open;
  const items = d.items = d.items || [];
  const list = h('div', { class: 'exchange' });
  let head = sessionHeader(d, S);
  const root = h('section', { id: 'session' }, head, list);
  const refreshHead = () => { const nh = sessionHeader(d, S); head.replaceWith(nh); head = nh; };
  ctx.main.append(root);
  const BATCH = 3000;
  let shown = 0, moreBtn = null;
  const rowBySeq = new Map();
  const emptyNote = h('p', { class: 'empty', text: 'No messages yet.' });

  function add(it) {
    if (it.kind === 'message') S.bySeq.set(it.seq, it);
    const row = itemRow(it, S);
    if (it.kind === 'message') rowBySeq.set(it.seq, row);
    list.append(row);
    if (it.kind === 'message' && it.type === 'completion' && it.reply_to != null) S.answer(it);
    if (it.kind === 'end') { S.ended = true; S.unanswered(); }
    emptyNote.remove();
  }
  // Huge sessions render in batches so the page stays responsive.
  function renderUpTo(n) {
    if (moreBtn) moreBtn.remove();
    for (; shown < Math.min(n, items.length); shown++) add(items[shown]);
    if (shown < items.length) {
      moreBtn = h('button', { type: 'button', class: 'more-items', onclick: () => renderUpTo(shown + BATCH) }, `show ${fmt.num(Math.min(BATCH, items.length - shown))} more of ${fmt.num(items.length - shown)} items`);
      list.append(moreBtn);
    } else moreBtn = null;
  }
  const want = Number(ctx.params.get('seq'));
  let upto = BATCH;
  if (want) { const i = items.findIndex(x => x.kind === 'message' && x.seq === want); if (i >= 0) upto = Math.max(upto, i + 200); }
  renderUpTo(upto);
  if (!items.length) list.append(emptyNote);
  if (want) {
    const row = rowBySeq.get(want);
    if (row) { row.classList.add('hl'); row.scrollIntoView({ block: 'center' }); }
  }
  ready(ctx);

  if (!d.open) return;
  // Follow the live session: new items append, parts grow a message, `end` closes it.
  const es = new EventSource(withToken(`/api/session/${encName(name)}/follow?after=${d.next || 0}`));
  ctx.cleanup.push(() => es.close());
  const atBottom = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 60;
  const closed = end => {
    es.close();
    d.open = false;
    if (end && end.reason) d.end = end;
    refreshHead();
  };
  es.addEventListener('item', ev => {
    let it;
    try { it = JSON.parse(ev.data); } catch { return; }
    const stick = atBottom();
    if (it.kind === 'part') {
      const row = rowBySeq.get(it.seq), m = S.bySeq.get(it.seq);
      if (row) row.body.grow(it.bytes || 0); else if (m) { m.bytes += it.bytes || 0; m.more = true; }
    } else {
      if (shown < items.length) { items.push(it); } else { items.push(it); shown++; add(it); }
      if (it.kind === 'tls') { d.tls = (d.tls || []).concat([it]); refreshHead(); }
      if (it.kind === 'end') closed(it);
    }
    if (stick) window.scrollTo(0, document.documentElement.scrollHeight);
  });
  es.addEventListener('end', ev => {
    let it = null;
    try { it = JSON.parse(ev.data); } catch { /* an end without data */ }
    if (!S.ended && it && it.reason) { it.kind = 'end'; items.push(it); if (shown === items.length - 1) { shown++; add(it); } }
    closed(it);
  });
}

// ---------------------------------------------------------------- waterfall

const tooltip = {
  el: null,
  show(x, y, content) {
    if (!this.el) { this.el = h('div', { class: 'tooltip', role: 'tooltip' }); document.body.append(this.el); }
    fill(this.el, content);
    this.el.hidden = false;
    const w = this.el.offsetWidth, hh = this.el.offsetHeight;
    this.el.style.left = Math.min(x + 14, window.innerWidth - w - 8) + 'px';
    this.el.style.top = (y + 16 + hh > window.innerHeight ? y - hh - 10 : y + 16) + 'px';
  },
  hide() { if (this.el) this.el.hidden = true; },
};

// Tick step of 1, 2 or 5 × 10^k seconds, about `n` ticks over the span.
function tickStep(spanUs, n) {
  const raw = spanUs / Math.max(1, n);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map(m => m * p).find(s => s >= raw) || p * 10;
}
const tickLabel = (us, step) => {
  const dec = Math.max(0, Math.ceil(-Math.log10(step / 1e6)));
  return (us / 1e6).toFixed(Math.min(dec, 6)) + ' s';
};

async function viewWaterfall(ctx) {
  let names = (ctx.params.get('names') || '').split(',').filter(Boolean);
  const note = h('span', { class: 'dim' });
  if (!names.length) {
    // No choice made: the newest burst of connections (those started within a minute of the newest).
    const all = (await ctx.api('/api/sessions')).sessions || [];
    const newest = all.reduce((m, s) => Math.max(m, s.start_us || 0), 0);
    names = all.filter(s => s.start_us >= newest - 60e6).slice(0, 50).map(s => s.name);
    if (names.length) setHash('#/waterfall' + qs({ names: names.join(',') }));
    note.textContent = 'Showing the newest connections (pick others in Sessions). ';
  }
  if (!names.length) {
    ctx.main.append(h('p', { class: 'empty', text: 'No sessions recorded yet.' }));
    return ready(ctx);
  }
  const d = await ctx.api('/api/timeline' + qs({ names: names.join(',') }));
  const lanes = (d.sessions || []).slice().sort((a, b) => a.start_us - b.start_us);
  if (!lanes.length) {
    ctx.main.append(h('p', { class: 'empty', text: 'None of these sessions could be read.' }));
    return ready(ctx);
  }
  const t0 = Math.min(...lanes.map(l => l.start_us));
  const now = Date.now() * 1000;
  let tEnd = 0;
  for (const l of lanes) {
    // An open session ends "now" for drawing, or at its last answer when the clock disagrees.
    let end = l.end_us || l.start_us;
    for (const c of l.commands) end = Math.max(end, l.start_us + c.t_us + (c.latency_us || 0));
    if (l.open) end = Math.max(end, Math.min(now, end + 60e6));
    l._end = end - t0;
    tEnd = Math.max(tEnd, l._end);
    // Pack overlapping commands (pipelining) into sub-rows of the lane.
    const rowsEnd = [];
    for (const c of l.commands.slice().sort((a, b) => a.t_us - b.t_us)) {
      c._s = l.start_us - t0 + c.t_us;
      c._e = c.latency_us != null ? c._s + c.latency_us : l._end;
      let r = rowsEnd.findIndex(e => e <= c._s);
      if (r < 0) { r = rowsEnd.length < 6 ? rowsEnd.length : rowsEnd.length - 1; }
      rowsEnd[r] = Math.max(rowsEnd[r] || 0, c._e);
      c._row = r;
    }
    l._rows = Math.max(1, rowsEnd.length);
  }
  tEnd = Math.max(tEnd, 1000);
  const from = Number(ctx.params.get('from')), to = Number(ctx.params.get('to'));
  let view = from >= 0 && to > from && ctx.params.has('to') ? [from * 1e6, to * 1e6] : [0, tEnd * 1.01];

  const ncmd = lanes.reduce((n, l) => n + l.commands.length, 0);
  const range = h('span', { class: 'mono dim' });
  const zoom = f => { const c = (view[0] + view[1]) / 2, half = (view[1] - view[0]) * f / 2; setView(c - half, c + half); };
  const box = h('div', { id: 'waterfall' });
  const panel = h('aside', { class: 'panel', hidden: true });
  ctx.main.append(
    h('div', { class: 'toolbar' },
      h('span', {}, h('b', { text: `${lanes.length} connection${lanes.length === 1 ? '' : 's'}` }), `, ${ncmd} commands · t = 0 at ${fmt.startUs(t0)} UTC`),
      h('span', { class: 'grow' }),
      h('span', { class: 'legend' }, ['OK', 'NO', 'BAD', 'unanswered'].map(s => h('span', { class: 'key k-' + s, text: s }))),
      range,
      h('button', { type: 'button', title: 'zoom in', onclick: () => zoom(0.5) }, '+'),
      h('button', { type: 'button', title: 'zoom out', onclick: () => zoom(2) }, '−'),
      h('button', { type: 'button', title: 'whole time range', onclick: () => setView(0, tEnd * 1.01) }, 'reset'),
      h('a', { class: 'button', href: '#/stats' + qs({ names: names.join(',') }) }, 'stats')),
    h('p', { class: 'hint dim' }, note, 'Wheel over the time axis (or Ctrl+wheel anywhere) zooms; drag along the axis to zoom into a range; double-click it to reset. Click a bar for the command and its answer.'),
    box, panel);

  const LBL = 250, ROW = lanes.length <= 12 ? 18 : 13, PAD = 4, AX = 26;
  const bars = new WeakMap(); // <rect> -> [lane, command]
  let axisSvg, laneSvg;

  function setView(a, b) {
    const span = Math.max(b - a, 200); // never below 0.2 ms across
    a = Math.max(-span * 0.05, a); b = a + span;
    view = [a, b];
    setHash('#/waterfall' + qs({ names: names.join(','), from: (a / 1e6).toFixed(4), to: (b / 1e6).toFixed(4) }));
    draw();
  }

  function draw() {
    const W = Math.max(700, box.clientWidth), plotW = W - LBL - 14;
    const [v0, v1] = view;
    const x = t => LBL + (t - v0) / (v1 - v0) * plotW;
    const clampX = px => Math.max(LBL, Math.min(LBL + plotW, px));
    range.textContent = `${fmt.secs(v0)}–${fmt.secs(v1)} s`;
    const step = tickStep(v1 - v0, plotW / 90);
    const ticks = [];
    for (let t = Math.ceil(v0 / step) * step; t <= v1; t += step) ticks.push(t);

    axisSvg = svg('svg', { class: 'axis', width: W, height: AX },
      svg('rect', { class: 'axis-bg', x: LBL, y: 0, width: plotW, height: AX }),
      svg('text', { x: 8, y: 17, class: 'axis-title' }, 'connection'),
      ticks.map(t => [svg('line', { x1: x(t), x2: x(t), y1: AX - 6, y2: AX, class: 'tick' }),
        svg('text', { x: x(t), y: 14, class: 'tick-label', 'text-anchor': 'middle' }, tickLabel(t, step))]),
      svg('rect', { class: 'brush', x: 0, y: 0, width: 0, height: AX, visibility: 'hidden' }));

    let y = 0;
    const bgs = []; // lane backgrounds, then grid lines, then the lanes: grid shows behind bars
    const laneGs = lanes.map((l, i) => {
      const hgt = l._rows * ROW + PAD * 2;
      const g = svg('g', { class: 'lane' + (l.open ? ' open' : ''), 'data-name': l.name, transform: `translate(0,${y})` });
      y += hgt;
      const label = `${sessNo(l.name)} ${l.user || '—'} ${l.client || ''}`;
      bgs.push(svg('rect', { class: 'lane-bg' + (i % 2 ? ' odd' : ''), x: 0, y: y - hgt, width: W, height: hgt }));
      g.append(svg('a', { href: sessionHref(l.name) }, svg('text', { class: 'lane-label', x: 8, y: PAD + 10 },
          svg('title', {}, l.name), label.length > 40 ? label.slice(0, 39) + '…' : label)));
      const ls = l.start_us - t0;
      if (l._end >= v0 && ls <= v1) {
        const a = clampX(x(ls)), b = clampX(x(l._end));
        g.append(svg('line', { class: 'life', x1: a, x2: Math.max(a + 1, b), y1: hgt / 2, y2: hgt / 2 }));
      }
      for (const c of l.commands) {
        if (c._e < v0 || c._s > v1) continue;
        const a = clampX(x(c._s)), b = clampX(x(c._e));
        const st = c.status || 'unanswered';
        const r = svg('rect', { class: 'bar st-' + st, 'data-seq': c.seq, 'data-status': st, x: a, y: PAD + c._row * ROW + 1, width: Math.max(3, b - a), height: ROW - 3, rx: 1.5 });
        bars.set(r, [l, c]);
        g.append(r);
        // Name the command inside its bar when there is room (IDLE, a slow FETCH).
        const label = c.name || '';
        if (b - a > label.length * 6.5 + 8 && ROW >= 16) g.append(svg('text', { class: 'bar-label', x: a + 4, y: PAD + c._row * ROW + ROW - 5 }, label));
      }
      return g;
    });
    const grid = ticks.map(t => svg('line', { class: 'grid', x1: x(t), x2: x(t), y1: 0, y2: y }));
    laneSvg = svg('svg', { class: 'lanes', width: W, height: y },
      svg('defs', {}, svg('pattern', { id: 'hatch', patternUnits: 'userSpaceOnUse', width: 6, height: 6, patternTransform: 'rotate(45)' },
        svg('rect', { width: 6, height: 6, fill: '#eaeef2' }), svg('line', { x1: 0, y1: 0, x2: 0, y2: 6, stroke: '#8c959f', 'stroke-width': 2.5 }))),
      bgs, grid, svg('line', { class: 'divider', x1: LBL - 0.5, x2: LBL - 0.5, y1: 0, y2: y }), laneGs);
    box.replaceChildren(axisSvg, laneSvg);
    wireAxis(x, plotW);
  }

  function wireAxis(x, plotW) {
    const toT = px => view[0] + (px - LBL) / plotW * (view[1] - view[0]);
    const localX = e => e.clientX - axisSvg.getBoundingClientRect().left;
    const wheel = e => {
      e.preventDefault();
      const t = toT(Math.max(LBL, localX(e)));
      const f = Math.pow(1.0015, e.deltaY);
      setView(t - (t - view[0]) * f, t + (view[1] - t) * f);
    };
    axisSvg.addEventListener('wheel', wheel, { passive: false });
    laneSvg.addEventListener('wheel', e => { if (e.ctrlKey || e.metaKey) wheel(e); }, { passive: false });
    axisSvg.addEventListener('dblclick', () => setView(0, tEnd * 1.01));
    axisSvg.addEventListener('mousedown', e => {
      const x0 = Math.max(LBL, localX(e));
      const brush = $('.brush', axisSvg);
      const move = ev => {
        const x1 = Math.max(LBL, Math.min(LBL + plotW, localX(ev)));
        attrs(brush, { x: Math.min(x0, x1), width: Math.abs(x1 - x0), visibility: 'visible' });
      };
      const up = ev => {
        removeEventListener('mousemove', move); removeEventListener('mouseup', up);
        const x1 = Math.max(LBL, Math.min(LBL + plotW, localX(ev)));
        if (Math.abs(x1 - x0) > 4) setView(toT(Math.min(x0, x1)), toT(Math.max(x0, x1)));
        else brush.setAttribute('visibility', 'hidden');
      };
      addEventListener('mousemove', move); addEventListener('mouseup', up);
      e.preventDefault();
    });
    laneSvg.addEventListener('mousemove', e => {
      const b = bars.get(e.target);
      if (!b) return tooltip.hide();
      const [l, c] = b;
      tooltip.show(e.clientX, e.clientY, [
        h('div', { class: 'mono tt-sum', text: c.summary || `${c.tag} ${c.name}` }),
        h('div', {}, h('b', { class: 'st-' + (c.status || 'unanswered'), text: c.status || 'no answer' }), ` · ${c.name} · tag ${c.tag} · ${c.latency_us != null ? fmt.lat(c.latency_us) : 'unanswered'}`),
        h('div', { class: 'dim', text: `${sessNo(l.name)} ${l.user || ''} · at ${fmt.secs(c.t_us)} s in session, ${fmt.secs(c._s)} s on the axis${c.mailbox ? ' · mailbox ' + c.mailbox : ''}` })]);
    });
    laneSvg.addEventListener('mouseleave', () => tooltip.hide());
    laneSvg.addEventListener('click', e => { const b = bars.get(e.target); if (b) openPanel(...b, e.target); });
  }

  // The clicked command and its answer, from the session itself (fetched once per session).
  const cache = new Map();
  function closePanel() {
    panel.hidden = true;
    document.body.classList.remove('has-panel');
    for (const r of box.querySelectorAll('rect.bar.picked')) r.classList.remove('picked');
  }
  ctx.cleanup.push(closePanel);
  async function openPanel(l, c, rect) {
    closePanel();
    rect.classList.add('picked');
    panel.hidden = false;
    document.body.classList.add('has-panel'); // room below the lanes, so the panel hides none
    panel.replaceChildren(h('p', { class: 'dim', text: 'loading…' }));
    if (!cache.has(l.name)) cache.set(l.name, ctx.api('/api/session/' + encName(l.name)));
    let d;
    try { d = await cache.get(l.name); } catch (e) { cache.delete(l.name); showError(e); panel.hidden = true; return; }
    const S = sessionState(l.name);
    for (const it of d.items) if (it.kind === 'message') S.bySeq.set(it.seq, it);
    const mine = d.items.filter(it => it.kind === 'message' && (it.seq === c.seq || it.reply_to === c.seq || (it.in_flight && it.in_flight.includes(c.seq))));
    const MAX = 60;
    const rows = mine.slice(0, MAX).map(it => itemRow(it, S));
    for (const it of mine) if (it.type === 'completion') S.answer(it);
    fill(panel,
      h('div', { class: 'panel-head' },
        h('b', { class: 'mono', text: c.summary || `${c.tag} ${c.name}` }),
        h('span', { class: 'st-' + (c.status || 'unanswered'), text: ` ${c.status || 'no answer'} ${c.latency_us != null ? fmt.lat(c.latency_us) : ''}` }),
        h('span', { class: 'grow' }),
        h('a', { href: sessionHref(l.name, c.seq) }, `open in session ${sessNo(l.name)}`),
        h('button', { type: 'button', class: 'close', title: 'close', onclick: closePanel }, '×')),
      h('div', { class: 'exchange compact' }, rows),
      mine.length > MAX ? h('p', { class: 'dim', text: `… ${mine.length - MAX} more responses in the session view` }) : null);
  }

  draw();
  let rt = null;
  const onResize = () => { clearTimeout(rt); rt = setTimeout(draw, 120); };
  addEventListener('resize', onResize);
  ctx.cleanup.push(() => removeEventListener('resize', onResize));
  ready(ctx);
}

// ---------------------------------------------------------------- stats

async function viewStats(ctx) {
  const names = ctx.params.get('names');
  const filter = Object.fromEntries(FILTERS.map(([k]) => [k, ctx.params.get(k) || '']).filter(([, v]) => v));
  const d = await ctx.api('/api/stats' + (names ? qs({ names }) : qs(filter)));
  const cmds = d.commands || [];
  const scope = names ? `${names.split(',').length} chosen session${names.includes(',') ? 's' : ''}`
    : Object.keys(filter).length ? 'sessions matching ' + Object.entries(filter).map(([k, v]) => `${k}=${v}`).join(' ') : 'all sessions';
  const total = cmds.reduce((n, c) => n + c.count, 0);
  const maxCount = Math.max(1, ...cmds.map(c => c.count));
  // Latency on a log scale: IDLE lasts seconds while NOOP takes a fraction of a millisecond.
  const lats = cmds.flatMap(c => [c.p50_us, c.p95_us, c.max_us]).filter(v => v > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.max(1, Math.min(...lats, 100)))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(lo * 10, ...lats))));
  const CW = 150, LW = 300, PL = 18; // PL: room for the first decade's label, centred
  const lx = us => PL + Math.max(0, Math.min(LW, (Math.log10(Math.max(us || lo, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * LW));
  const decades = [];
  for (let v = lo; v <= hi; v *= 10) decades.push(v);
  const decLabel = us => us >= 1e6 ? us / 1e6 + ' s' : us / 1000 + ' ms';
  const latAxis = svg('svg', { class: 'chart', width: LW + 2 * PL, height: 16 }, decades.map(v => svg('text', { x: lx(v), y: 12, 'text-anchor': 'middle', class: 'tick-label' }, decLabel(v))));
  const table = h('table', { id: 'stats', class: 'grid' },
    h('thead', {}, h('tr', {}, h('th', { text: 'command' }), h('th', { class: 'r', text: 'count' }), h('th', { class: 'r', text: 'NO' }), h('th', { class: 'r', text: 'BAD' }),
      h('th', { class: 'r', text: 'p50 ms' }), h('th', { class: 'r', text: 'p95 ms' }), h('th', { class: 'r', text: 'max ms' }),
      h('th', {}, 'count ', h('span', { class: 'dim', text: '(OK / NO / BAD)' })), h('th', { class: 'chart-head', title: 'latency, log scale' }, latAxis))),
    h('tbody', {}, cmds.map(c => {
      const w = n => n / maxCount * CW, ok = c.count - (c.no || 0) - (c.bad || 0);
      const countChart = svg('svg', { class: 'chart', width: CW + 4, height: 14 },
        svg('rect', { class: 'st-OK', x: 0, y: 2, width: w(ok), height: 10 }),
        svg('rect', { class: 'st-NO', x: w(ok), y: 2, width: w(c.no || 0), height: 10 }),
        svg('rect', { class: 'st-BAD', x: w(ok + (c.no || 0)), y: 2, width: w(c.bad || 0), height: 10 }));
      const latChart = svg('svg', { class: 'chart', width: LW + 2 * PL, height: 14 },
        svg('title', {}, `p50 ${fmt.lat(c.p50_us)} · p95 ${fmt.lat(c.p95_us)} · max ${fmt.lat(c.max_us)}`),
        decades.map(v => svg('line', { class: 'grid', x1: lx(v), x2: lx(v), y1: 0, y2: 14 })),
        svg('line', { class: 'whisker', x1: lx(c.p95_us), x2: lx(c.max_us), y1: 7, y2: 7 }),
        svg('rect', { class: 'p95', x: PL, y: 2, width: Math.max(2, lx(c.p95_us) - PL), height: 10 }),
        svg('rect', { class: 'p50', x: PL, y: 2, width: Math.max(2, lx(c.p50_us) - PL), height: 10 }),
        svg('line', { class: 'maxmark', x1: lx(c.max_us), x2: lx(c.max_us), y1: 1, y2: 13 }));
      return h('tr', { 'data-command': c.name },
        h('td', { class: 'mono' }, h('a', { href: '#/search' + qs({ command: c.name, ...(filter.user ? { user: filter.user } : {}) }), title: 'find these commands', text: c.name })),
        h('td', { class: 'r', text: fmt.num(c.count) }),
        h('td', { class: 'r' + (c.no ? ' st-NO' : ' dim'), text: c.no || 0 }),
        h('td', { class: 'r' + (c.bad ? ' st-BAD' : ' dim'), text: c.bad || 0 }),
        h('td', { class: 'r mono', text: fmt.ms(c.p50_us) }), h('td', { class: 'r mono', text: fmt.ms(c.p95_us) }), h('td', { class: 'r mono', text: fmt.ms(c.max_us) }),
        h('td', {}, countChart), h('td', {}, latChart));
    })));
  ctx.main.append(
    h('div', { class: 'toolbar' }, h('span', {}, h('b', { text: `${fmt.num(d.sessions)} session${d.sessions === 1 ? '' : 's'}` }), `, ${fmt.num(total)} commands (latencies of the answered ones) · ${scope}`),
      h('span', { class: 'grow' }),
      h('span', { class: 'legend' }, h('span', { class: 'key k-p50', text: 'p50' }), h('span', { class: 'key k-p95', text: 'p95' }), h('span', { class: 'key k-max', text: 'max' })),
      names ? h('a', { class: 'button', href: '#/waterfall' + qs({ names }) }, 'waterfall') : h('a', { class: 'button', href: Object.keys(filter).length ? '#/sessions' + qs(filter) : '#/' }, 'sessions')),
    cmds.length ? table : h('p', { class: 'empty', text: 'No commands in these sessions.' }));
  ready(ctx);
}

// ---------------------------------------------------------------- search

async function viewSearch(ctx) {
  const P = ['q', 'command', 'status', 'user', 'mailbox', 'client'];
  const v = Object.fromEntries(P.map(k => [k, ctx.params.get(k) || '']));
  const form = h('form', { id: 'search-form', class: 'filterbar', autocomplete: 'off' },
    P.map(k => h('label', { class: 'f-' + k }, h('span', { text: k === 'q' ? 'text' : k }),
      h('input', { name: k, value: v[k], spellcheck: 'false', placeholder: k === 'q' ? 'TRYCREATE, Subject:, a12…' : '', list: k === 'command' || k === 'status' ? 'dl-' + k : null, autofocus: k === 'q' }))),
    h('button', { type: 'submit', class: 'primary' }, 'Search'), datalists());
  form.addEventListener('submit', e => {
    e.preventDefault();
    const q = Object.fromEntries(P.map(k => [k, form.elements[k].value.trim()]));
    const hash = '#/search' + qs(q);
    if (hash === location.hash) route(); else location.hash = hash;
  });
  ctx.main.append(form);
  if (!P.some(k => v[k])) {
    ctx.main.append(h('p', { class: 'empty', text: 'Search the messages of every session: text, and/or command, status, user, mailbox, client.' }));
    return ready(ctx);
  }
  const d = await ctx.api('/api/search' + qs({ ...v, limit: 500 }));
  const hits = d.hits || [];
  // Highlight the searched text inside a line, as text nodes around <mark>s.
  const marked = line => {
    if (!v.q) return line;
    const out = [], low = line.toLowerCase(), q = v.q.toLowerCase();
    let i = 0, j;
    while ((j = low.indexOf(q, i)) >= 0 && q) { out.push(line.slice(i, j), h('mark', { text: line.slice(j, j + q.length) })); i = j + q.length; }
    out.push(line.slice(i));
    return out;
  };
  ctx.main.append(
    h('div', { class: 'toolbar' }, h('b', { text: `${fmt.num(hits.length)} hit${hits.length === 1 ? '' : 's'}` }),
      d.truncated ? h('span', { class: 'st-NO', text: ' · only the first ones: narrow the search' }) : null),
    hits.length ? h('table', { id: 'search-results', class: 'grid' },
      h('thead', {}, h('tr', {}, ['session', 'time', '', 'type', 'tag', 'line'].map(t => h('th', { text: t, class: t === 'time' ? 'r' : null })))),
      h('tbody', {}, hits.map(x => h('tr', { 'data-name': x.name, 'data-seq': x.seq, class: 'clickable', onclick: e => { if (!e.target.closest('a')) location.hash = sessionHref(x.name, x.seq); } },
        h('td', { class: 'mono' }, h('a', { href: sessionHref(x.name, x.seq), title: x.name, text: x.name })),
        h('td', { class: 'r mono', text: fmt.secs(x.t_us || 0) }),
        h('td', { class: 'side ' + x.from, text: SIDE[x.from] || '' }),
        h('td', { class: 'dim', text: x.type || '' }),
        h('td', { class: 'mono', text: x.tag || '' }),
        h('td', { class: 'mono line' + (x.status ? ' st-' + x.status : '') }, marked(x.line || '')))))) : h('p', { class: 'empty', text: 'Nothing found.' }));
  ready(ctx);
}

// ---------------------------------------------------------------- replays

async function viewReplays(ctx) {
  const d = await ctx.api('/api/replays');
  // The list's shape is loose in docs/web.md: accept names or objects, bare or under a key.
  const list = (Array.isArray(d) ? d : d.replays || d.files || d.reports || []).map(x => typeof x === 'string' ? { name: x } : x);
  const has = k => list.some(r => r[k] != null);
  ctx.main.append(h('section', { id: 'replays' },
    h('h1', { text: 'Replay reports' }),
    h('p', { class: 'dim' }, 'Files ', h('code', { text: '*.replay.json' }), ' in the recordings directory, written by ', h('code', { text: 'imapscope replay CAPTURE --upstream … --json > DIR/run.replay.json' }), '.'),
    list.length ? h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', { text: 'report' }), has('ok') || has('passed') ? h('th', { text: 'result' }) : null,
        has('size') ? h('th', { class: 'r', text: 'size' }) : null, has('modified') || has('mtime') ? h('th', { text: 'modified' }) : null)),
      h('tbody', {}, list.map(r => {
        const res = r.ok === true ? h('span', { class: 'badge pass', text: 'PASS' }) : r.ok === false ? h('span', { class: 'badge fail', text: 'FAIL' })
          : r.passed != null ? `${r.passed} passed, ${r.failed || 0} failed` : '';
        return h('tr', { 'data-name': r.name },
          h('td', { class: 'mono' }, h('a', { href: '#/replay/' + encName(r.name), text: r.name })),
          has('ok') || has('passed') ? h('td', {}, res) : null,
          has('size') ? h('td', { class: 'r', text: r.size != null ? fmt.bytes(r.size) : '' }) : null,
          has('modified') || has('mtime') ? h('td', { class: 'mono dim', text: r.modified || (typeof r.mtime === 'number' ? fmt.startUs(r.mtime * 1e6) + ' UTC' : r.mtime || '') }) : null);
      }))) : h('p', { class: 'empty', text: 'No replay reports yet.' })));
  ready(ctx);
}

const groupLabel = g => g === 'Greeting' ? '(greeting)' : g === 'Unsolicited' ? '(unsolicited: no command in flight)'
  : g && g.Command != null ? `command ${g.Command + 1}` : JSON.stringify(g);

function reportBlock(r) {
  const ok = r.ok;
  const sec = h('section', { class: 'report ' + (ok ? 'pass' : 'fail'), 'data-transcript': r.transcript },
    h('h2', {}, h('span', { class: 'badge ' + (ok ? 'pass' : 'fail'), text: ok ? 'PASS' : 'FAIL' }), ' ', h('span', { class: 'mono', text: r.transcript || '?' }),
      h('span', { class: 'dim', text: `: ${r.commands} commands, ${r.matched} responses matched, ${r.missing} missing, ${r.unexpected} unexpected, in ${Number(r.seconds || 0).toFixed(2)} s` })),
    r.error ? h('div', { class: 'it error' }, h('span', { class: 'icon', text: '✖' }), ' ' + r.error) : null);
  let first = true;
  for (const g of r.differences || []) {
    const lines = [];
    for (const l of g.lines || []) {
      if (l.mark !== 'same' && first) { first = false; lines.push(h('div', { class: 'first-diff dim', text: 'first difference (- recorded, + received)' })); }
      lines.push(h('div', { class: 'diff-line ' + l.mark, title: l.mark },
        h('span', { class: 'gutter', text: l.mark === 'missing' ? '-' : l.mark === 'extra' ? '+' : ' ' }), h('span', { class: 'text', text: 'S: ' + l.text })));
      if (l.detail && l.detail.length) {
        lines.push(h('div', { class: 'diff-detail' }, l.detail.map(t => h('div', {
          class: 'd ' + (t.startsWith('@@') ? 'hunk' : t[0] === '-' ? 'del' : t[0] === '+' ? 'add' : 'ctx'), text: t || ' ' }))));
      }
    }
    sec.append(h('div', { class: 'group' },
      h('div', { class: 'group-head' }, g.command ? h('span', { class: 'mono cmd', text: 'C: ' + g.command }) : null, h('span', { class: 'dim', text: ' ' + groupLabel(g.group) })),
      lines));
  }
  if (r.bindings && r.bindings.length) {
    sec.append(h('details', { class: 'bindings' }, h('summary', { text: `bindings (${r.bindings.length}): values that may differ between runs` }),
      h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ['value', 'of', 'recorded', 'received'].map(t => h('th', { text: t })))),
        h('tbody', {}, r.bindings.map(b => h('tr', {}, [b.var, b.of, b.recorded, b.received].map(t => h('td', { class: 'mono', text: t == null ? '' : String(t) }))))))));
  }
  return sec;
}

async function viewReplay(ctx, name) {
  const d = await ctx.api('/api/replay/' + encName(name));
  const reports = Array.isArray(d) ? d : d.reports || (d.transcript ? [d] : []);
  const pass = reports.filter(r => r.ok).length;
  ctx.main.append(h('section', { id: 'replay' },
    h('div', { class: 'toolbar' }, h('a', { href: '#/replays', text: '← replays' }), h('span', { class: 'mono', text: name }),
      h('span', { class: 'grow' }),
      h('b', { class: pass === reports.length ? 'st-OK' : 'st-BAD', text: `${pass} of ${reports.length} transcript${reports.length === 1 ? '' : 's'} passed` })),
    reports.map(reportBlock)));
  ready(ctx);
}

// ---------------------------------------------------------------- start

// The token is kept (see `token`): take it out of the address bar (keeping the hash) so a
// copied link does not carry it.
if (new URLSearchParams(location.search).has('token')) history.replaceState(null, '', location.pathname + location.hash);
addEventListener('hashchange', route);
startLive();
route();
