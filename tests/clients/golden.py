"""Deterministic client scenarios for imapscope's golden transcripts.

Usage: golden.py SCENARIO PORT DOVECOT_DIR

Each scenario talks to 127.0.0.1:PORT as nell / ASecretPassword. The server must be a fresh
test Dovecot (tests/dovecot/start.sh) seeded with tests/fixtures/mail/01-plain.eml,
02-multipart.eml and 03-large.eml, in that order, into INBOX; or imapscope in front of one;
or a fake server replaying a golden transcript of the same scenario.

DOVECOT_DIR is only used by `idle`, which delivers 04-pushed.eml with tests/dovecot/seed.sh
while the client idles. With DOVECOT_DIR `-` nothing is delivered: the client only waits
(up to 15 s) for the server to push the EXISTS (a fake server does).

Scenarios: login-select (imaplib), search-fetch, store-copy-move-expunge, append, idle,
auth-plain, errors (raw socket, tags a1, a2, ...; one command at a time).

Every scenario sends the same bytes on every run, so a transcript recorded from it can be
replayed to it. It checks what the client relies on (statuses, EXISTS counts, literal sizes
and contents), not volatile values (UIDVALIDITY, INTERNALDATE, timings in the OK texts).
It prints a short summary on stdout and exits non-zero with a message on any mismatch.
"""

import base64
import imaplib
import os
import random
import re
import socket
import subprocess
import sys
import time
import zlib

USER = "nell"
PASSWORD = "ASecretPassword"
HOST = "127.0.0.1"
TIMEOUT = 15.0

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIL = os.path.join(REPO, "tests", "fixtures", "mail")
SEED = os.path.join(REPO, "tests", "dovecot", "seed.sh")


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def fixture(name):
    with open(os.path.join(MAIL, name), "rb") as f:
        return f.read()


def say(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------
# A raw IMAP client: one command at a time, responses read whole (literals included).


class Response:
    """One server response: its line segments and the literals between them."""

    def __init__(self):
        self.segments = []  # the text lines, each ending with CRLF (after the literal if any)
        self.literals = []  # (the segment that announced it, the literal's bytes)

    @property
    def first(self):
        return self.segments[0]

    def text(self):
        """The response with literals replaced by their size, for matching."""
        return b"".join(self.segments)

    def __repr__(self):
        return repr(self.text()[:200])


class Raw:
    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.buf = b""
        self.n = 0
        # After COMPRESS DEFLATE: raw DEFLATE both ways (RFC 4978).
        self.inflate = None
        self.deflate = None
        greeting = self.read_response()
        check(greeting.first.startswith(b"* OK"), "greeting is not * OK: %r" % greeting)

    def _fill(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Failure("timed out after %.0f s waiting for the server" % TIMEOUT)
        if not data:
            raise EOFError
        if self.inflate:
            data = self.inflate.decompress(data)
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self):
        r = Response()
        while True:
            line = self._line()
            r.segments.append(line)
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return r
            r.literals.append((line, self._exact(int(m.group(1)))))

    def send(self, data):
        if self.deflate:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def start_compress(self):
        self.inflate = zlib.decompressobj(wbits=-15)
        self.deflate = zlib.compressobj(wbits=-15)

    def tag(self):
        self.n += 1
        return "a%d" % self.n

    def command(self, text, expect="OK"):
        """Send one command line; return (untagged responses, completion line)."""
        tag = self.tag()
        self.send(("%s %s\r\n" % (tag, text)).encode())
        return self.finish(tag, text, expect)

    def finish(self, tag, text, expect):
        untagged = []
        while True:
            r = self.read_response()
            if r.first.startswith(tag.encode() + b" "):
                status = r.first.split(b" ")[1].decode()
                shown = re.sub(r"(LOGIN \S+) \S+", r"\1 <password>", text)
                check(
                    status == expect,
                    "%s %s: expected %s, got %r" % (tag, shown, expect, r.first),
                )
                say("%s %s -> %s" % (tag, shown, status))
                return untagged, r.first
            check(
                r.first.startswith(b"* "),
                "%s: unexpected line %r while waiting for the completion" % (tag, r.first),
            )
            untagged.append(r)

    def logout(self):
        untagged, _ = self.command("LOGOUT")
        check(any(u.first.startswith(b"* BYE") for u in untagged), "LOGOUT without * BYE")
        # Wait until the server closes the connection.
        try:
            while True:
                r = self.read_response()
                raise Failure("data after LOGOUT: %r" % r)
        except EOFError:
            pass
        self.sock.close()
        say("server closed the connection")


def exists(untagged):
    """The last EXISTS count among untagged responses, or None."""
    n = None
    for u in untagged:
        m = re.match(rb"\* (\d+) EXISTS\r\n", u.first)
        if m:
            n = int(m.group(1))
    return n


def fetches(untagged):
    """The untagged FETCH responses, as {sequence number: Response}."""
    out = {}
    for u in untagged:
        m = re.match(rb"\* (\d+) FETCH ", u.first)
        if m:
            check(int(m.group(1)) not in out, "two FETCH responses for %s" % m.group(1))
            out[int(m.group(1))] = u
    return out


def flags_of(resp):
    m = re.search(rb"FLAGS \(([^)]*)\)", resp.text())
    check(m is not None, "no FLAGS in %r" % resp)
    return set(m.group(1).decode().split())


def literal(resp, item):
    """The literal that follows `ITEM {n}` in a FETCH response."""
    for seg, data in resp.literals:
        if re.search(re.escape(item.encode()) + rb" \{\d+\}\r\n$", seg):
            return data
    raise Failure("no %s literal in %r" % (item, resp))


def mime_parts(message):
    """The bodies of the parts of a one-level multipart message, as BODY[n] returns them."""
    head, body = message.split(b"\r\n\r\n", 1)
    boundary = re.search(rb'boundary="([^"]+)"', head).group(1)
    delim = b"\r\n--" + boundary
    pieces = (b"\r\n" + body).split(delim)[1:-1]
    parts = []
    for p in pieces:
        p = p[2:]  # the CRLF ending the delimiter line
        parts.append(p.split(b"\r\n\r\n", 1)[1])
    return parts


# ---------------------------------------------------------------------------------------
# Scenarios


def login_select(port, _dir):
    # imaplib picks a random tag prefix; seed it so every run sends the same bytes.
    random.seed(20260302)
    c = imaplib.IMAP4(HOST, port)
    say("tag prefix %s" % c.tagpre.decode())
    typ, _ = c.login(USER, PASSWORD)
    check(typ == "OK", "LOGIN: %s" % typ)
    typ, data = c.capability()
    check(typ == "OK", "CAPABILITY: %s %r" % (typ, data))
    caps = data[0].split()
    check(b"IMAP4rev1" in caps and b"IDLE" in caps, "CAPABILITY lacks IMAP4rev1/IDLE: %r" % data)
    typ, data = c.list('""', "*")
    check(typ == "OK", "LIST: %s %r" % (typ, data))
    names = sorted(d.rsplit(b" ", 1)[1].decode() for d in data)
    check(
        names == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"],
        "LIST gave %r" % names,
    )
    typ, data = c.select("INBOX")
    check(typ == "OK" and data == [b"3"], "SELECT INBOX: %s %r (want 3 messages)" % (typ, data))
    typ, data = c.select("INBOX", readonly=True)
    check(typ == "OK" and data == [b"3"], "EXAMINE INBOX: %s %r (want 3 messages)" % (typ, data))
    typ, data = c.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)")
    check(typ == "OK", "STATUS: %s %r" % (typ, data))
    m = re.search(rb"MESSAGES (\d+) UIDNEXT (\d+) UNSEEN (\d+)", data[0])
    check(m is not None, "STATUS reply %r" % data)
    check(m.groups() == (b"3", b"4", b"3"), "STATUS INBOX %r, want MESSAGES 3 UIDNEXT 4 UNSEEN 3" % data)
    typ, data = c.logout()
    check(typ == "BYE", "LOGOUT: %s %r" % (typ, data))
    say("login-select: %d mailboxes, INBOX has 3 messages, status %s" % (len(names), m.group(0).decode()))


def search_fetch(port, _dir):
    files = [fixture(n) for n in ("01-plain.eml", "02-multipart.eml", "03-large.eml")]
    c = Raw(port)
    c.command("LOGIN %s %s" % (USER, PASSWORD))
    u, _ = c.command("SELECT INBOX")
    check(exists(u) == 3, "SELECT INBOX: %s EXISTS, want 3" % exists(u))

    u, _ = c.command("SEARCH ALL")
    check([x.first for x in u] == [b"* SEARCH 1 2 3\r\n"], "SEARCH ALL: %r" % u)
    u, _ = c.command('UID SEARCH SUBJECT "Multipart"')
    check([x.first for x in u] == [b"* SEARCH 2\r\n"], "UID SEARCH SUBJECT: %r" % u)

    u, _ = c.command("FETCH 1:* (FLAGS)")
    f = fetches(u)
    check(sorted(f) == [1, 2, 3], "FETCH 1:* (FLAGS) answered for %r" % sorted(f))
    for n in f:
        check("\\Seen" not in flags_of(f[n]), "message %d is already \\Seen" % n)

    u, _ = c.command("FETCH 1:* (ENVELOPE)")
    f = fetches(u)
    check(sorted(f) == [1, 2, 3], "FETCH 1:* (ENVELOPE) answered for %r" % sorted(f))
    for n, subject in ((1, b"Plain hello"), (2, b"Multipart with attachment"), (3, b"Large text message")):
        check(b'"' + subject + b'"' in f[n].text(), "ENVELOPE of %d lacks subject %r" % (n, subject))
        mid = re.search(rb"Message-ID: (\S+)", files[n - 1]).group(1)
        check(b'"' + mid + b'"' in f[n].text(), "ENVELOPE of %d lacks %r" % (n, mid))

    u, _ = c.command("FETCH 2 (BODYSTRUCTURE)")
    f = fetches(u)
    check(list(f) == [2], "FETCH 2 (BODYSTRUCTURE) answered for %r" % list(f))
    bs = f[2].text().upper()
    check(b'"MIXED"' in bs and b'"BASE64"' in bs and b'"OCTET-STREAM"' in bs,
          "BODYSTRUCTURE is not multipart/mixed with a base64 part: %r" % f[2])

    u, _ = c.command("FETCH 2 (BODY.PEEK[1] BODY.PEEK[2])")
    f = fetches(u)
    check(list(f) == [2], "FETCH 2 (BODY.PEEK[1] BODY.PEEK[2]) answered for %r" % list(f))
    want = mime_parts(files[1])
    got1, got2 = literal(f[2], "BODY[1]"), literal(f[2], "BODY[2]")
    check(got1 == want[0], "BODY[1]: %d bytes differ from the fixture's part 1 (%d)" % (len(got1), len(want[0])))
    check(got2 == want[1], "BODY[2]: %d bytes differ from the fixture's part 2 (%d)" % (len(got2), len(want[1])))
    check(base64.b64decode(got2).endswith(b"golden attachment\n"), "BODY[2] does not decode")

    u, _ = c.command("FETCH 3 (BODY.PEEK[])")
    f = fetches(u)
    check(list(f) == [3], "FETCH 3 (BODY.PEEK[]) answered for %r" % list(f))
    body = literal(f[3], "BODY[]")
    check(len(body) == len(files[2]), "BODY[] of 3 is %d bytes, the file %d" % (len(body), len(files[2])))
    check(body == files[2], "BODY[] of 3 differs from 03-large.eml")

    u, _ = c.command("UID FETCH 1:* (UID RFC822.SIZE)")
    f = fetches(u)
    check(sorted(f) == [1, 2, 3], "UID FETCH answered for %r" % sorted(f))
    for n in f:
        m = re.search(rb"UID (\d+)", f[n].first)
        check(m and int(m.group(1)) == n, "message %d has %r" % (n, f[n]))
        m = re.search(rb"RFC822\.SIZE (\d+)", f[n].first)
        check(m and int(m.group(1)) == len(files[n - 1]),
              "RFC822.SIZE of %d is %r, the file has %d" % (n, m and m.group(1), len(files[n - 1])))
    c.logout()
    say("search-fetch: 3 messages; BODY[1] %d, BODY[2] %d, BODY[] %d bytes as in the fixtures"
        % (len(got1), len(got2), len(body)))


def store_copy_move_expunge(port, _dir):
    c = Raw(port)
    c.command("LOGIN %s %s" % (USER, PASSWORD))
    u, _ = c.command("SELECT INBOX")
    check(exists(u) == 3, "SELECT INBOX: %s EXISTS, want 3" % exists(u))

    u, _ = c.command("STORE 1 +FLAGS (\\Flagged)")
    f = fetches(u)
    check(list(f) == [1] and "\\Flagged" in flags_of(f[1]), "STORE 1 +FLAGS: %r" % u)

    u, _ = c.command("UID STORE 2 FLAGS (\\Seen \\Answered)")
    f = fetches(u)
    check(list(f) == [2] and {"\\Seen", "\\Answered"} <= flags_of(f[2]), "UID STORE 2 FLAGS: %r" % u)

    _, done = c.command("COPY 1 Archive")
    check(b"[COPYUID " in done, "COPY without COPYUID: %r" % done)

    u, _ = c.command("MOVE 2 Trash")
    check([x.first for x in u if b"EXPUNGE" in x.first] == [b"* 2 EXPUNGE\r\n"], "MOVE 2 Trash: %r" % u)

    # After the MOVE, the large message (sequence number 3 before) is number 2.
    u, _ = c.command("STORE 2 +FLAGS (\\Deleted)")
    f = fetches(u)
    check(list(f) == [2] and "\\Deleted" in flags_of(f[2]), "STORE 2 +FLAGS (\\Deleted): %r" % u)

    u, _ = c.command("EXPUNGE")
    check([x.first for x in u if b"EXPUNGE" in x.first] == [b"* 2 EXPUNGE\r\n"], "EXPUNGE: %r" % u)

    u, _ = c.command("SELECT Archive")
    check(exists(u) == 1, "SELECT Archive: %s EXISTS, want 1" % exists(u))
    u, _ = c.command("FETCH 1:* (FLAGS)")
    f = fetches(u)
    check(list(f) == [1] and "\\Flagged" in flags_of(f[1]), "Archive FETCH 1:* (FLAGS): %r" % u)
    c.command("CLOSE")
    c.logout()
    say("store-copy-move-expunge: INBOX left with 1 message, Archive has the \\Flagged copy")


APPEND_SYNC = (
    b"From: Ada Lovelace <ada@example.org>\r\n"
    b"To: Nell Gwyn <nell@example.com>\r\n"
    b"Subject: Appended with a synchronizing literal\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <golden-append-sync@example.org>\r\n"
    b"\r\n"
    b"The client waited for the continuation before sending this.\r\n"
)
APPEND_PLUS = (
    b"From: Ada Lovelace <ada@example.org>\r\n"
    b"To: Nell Gwyn <nell@example.com>\r\n"
    b"Subject: Appended with LITERAL+\r\n"
    b"Date: Mon, 02 Mar 2026 10:01:00 +0000\r\n"
    b"Message-ID: <golden-append-plus@example.org>\r\n"
    b"\r\n"
    b"Sent without waiting.\r\n"
)


def append(port, _dir):
    c = Raw(port)
    c.command("LOGIN %s %s" % (USER, PASSWORD))
    u, _ = c.command("SELECT INBOX")
    check(exists(u) == 3, "SELECT INBOX: %s EXISTS, want 3" % exists(u))

    # Synchronizing literal: wait for the continuation request.
    tag = c.tag()
    text = "APPEND INBOX (\\Seen) {%d}" % len(APPEND_SYNC)
    c.send(("%s %s\r\n" % (tag, text)).encode())
    r = c.read_response()
    check(r.first.startswith(b"+"), "APPEND {n}: expected a continuation, got %r" % r)
    say("%s got continuation %r" % (tag, r.first.decode().strip()))
    c.send(APPEND_SYNC + b"\r\n")
    u, done = c.finish(tag, text, "OK")
    check(b"[APPENDUID " in done and done.split(b"]")[0].endswith(b" 4"), "APPEND: %r" % done)

    # LITERAL+: no waiting.
    tag = c.tag()
    text = "APPEND INBOX {%d+}" % len(APPEND_PLUS)
    c.send(("%s %s\r\n" % (tag, text)).encode() + APPEND_PLUS + b"\r\n")
    u2, done = c.finish(tag, text, "OK")
    check(b"[APPENDUID " in done and done.split(b"]")[0].endswith(b" 5"), "APPEND: %r" % done)

    u3, _ = c.command("NOOP")
    n = exists(u + u2 + u3)
    check(n == 5, "after two APPENDs and NOOP: %s EXISTS, want 5" % n)

    u, _ = c.command("FETCH 4:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    f = fetches(u)
    check(sorted(f) == [4, 5], "FETCH 4:* answered for %r" % sorted(f))
    h4 = literal(f[4], "BODY[HEADER.FIELDS (SUBJECT)]")
    h5 = literal(f[5], "BODY[HEADER.FIELDS (SUBJECT)]")
    check(h4 == b"Subject: Appended with a synchronizing literal\r\n\r\n", "message 4 header %r" % h4)
    check(h5 == b"Subject: Appended with LITERAL+\r\n\r\n", "message 5 header %r" % h5)
    check("\\Seen" in flags_of(f[4]), "message 4 is not \\Seen: %r" % f[4])
    check("\\Seen" not in flags_of(f[5]), "message 5 is \\Seen: %r" % f[5])
    c.logout()
    say("append: 2 messages appended (%d and %d bytes), INBOX has 5" % (len(APPEND_SYNC), len(APPEND_PLUS)))


def idle(port, dovecot_dir):
    c = Raw(port)
    c.command("LOGIN %s %s" % (USER, PASSWORD))
    u, _ = c.command("SELECT INBOX")
    check(exists(u) == 3, "SELECT INBOX: %s EXISTS, want 3" % exists(u))

    tag = c.tag()
    c.send(("%s IDLE\r\n" % tag).encode())
    r = c.read_response()
    check(r.first.startswith(b"+ "), "IDLE: expected a continuation, got %r" % r)
    say("%s IDLE -> %r" % (tag, r.first.decode().strip()))

    if dovecot_dir != "-":
        pushed = os.path.join(MAIL, "04-pushed.eml")
        res = subprocess.run([SEED, dovecot_dir, USER, pushed], capture_output=True, text=True)
        check(res.returncode == 0, "seed.sh failed (%d): %s" % (res.returncode, res.stderr.strip()))
        say("delivered 04-pushed.eml")

    deadline = time.monotonic() + TIMEOUT
    seen = []
    while True:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            r = c.read_response()
        except Failure:
            raise Failure("no * 4 EXISTS within %.0f s of IDLE (got %r)" % (TIMEOUT, seen))
        seen.append(r.first)
        check(r.first.startswith(b"* "), "unexpected line during IDLE: %r" % r)
        if r.first == b"* 4 EXISTS\r\n":
            break
    say("pushed: %r" % r.first.decode().strip())
    # Let the rest of the push (RECENT, ...) arrive before DONE.
    time.sleep(0.5)
    c.sock.settimeout(TIMEOUT)
    c.send(b"DONE\r\n")
    after, _ = c.finish(tag, "IDLE", "OK")
    say("untagged during IDLE: %s" % ", ".join(x.decode().strip() for x in seen + [a.first for a in after]))

    u, _ = c.command("FETCH 4 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    f = fetches(u)
    check(list(f) == [4], "FETCH 4 answered for %r" % list(f))
    h = literal(f[4], "BODY[HEADER.FIELDS (SUBJECT)]")
    check(h == b"Subject: Pushed during IDLE\r\n\r\n", "message 4 header %r" % h)
    c.logout()
    say("idle: EXISTS pushed during IDLE, message 4 is the pushed one")


def auth_plain(port, _dir):
    c = Raw(port)
    tag = c.tag()
    text = "AUTHENTICATE PLAIN"
    c.send(("%s %s\r\n" % (tag, text)).encode())
    r = c.read_response()
    check(r.first.startswith(b"+"), "AUTHENTICATE PLAIN: expected a continuation, got %r" % r)
    say("%s got continuation %r" % (tag, r.first.decode().strip()))
    payload = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
    c.send(payload + b"\r\n")
    c.finish(tag, text, "OK")

    u, _ = c.command("NAMESPACE")
    check(len(u) == 1 and u[0].first.startswith(b'* NAMESPACE (("" "/"))'), "NAMESPACE: %r" % u)
    u, _ = c.command('LIST "" "%"')
    names = sorted(x.first.rstrip(b"\r\n").rsplit(b" ", 1)[1].decode() for x in u)
    check(names == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"], "LIST %% gave %r" % names)
    c.command("FROB", expect="BAD")
    c.logout()
    say("auth-plain: authenticated, %d mailboxes, FROB rejected" % len(names))


def errors(port, _dir):
    c = Raw(port)
    _, done = c.command("LOGIN %s wrongpassword" % USER, expect="NO")
    check(b"[AUTHENTICATIONFAILED]" in done, "wrong password: %r" % done)
    c.command("LOGIN %s %s" % (USER, PASSWORD))
    c.command("SELECT NoSuchMailbox", expect="NO")
    c.command("FETCH 1 FLAGS", expect="BAD")
    c.logout()
    say("errors: NO, OK, NO, BAD as expected")


def compress(port, _dir):
    c = Raw(port)
    c.command("LOGIN %s %s" % (USER, PASSWORD))
    c.command("COMPRESS DEFLATE")
    c.start_compress()
    u, _ = c.command("SELECT INBOX")
    check(exists(u) == 3, "SELECT INBOX after COMPRESS: %r" % u)
    u, _ = c.command("FETCH 1 (BODY.PEEK[])")
    check(literal(u[0], "BODY[]") == fixture("01-plain.eml"), "FETCH 1 BODY[] differs")
    u, _ = c.command("FETCH 3 (BODY.PEEK[])")
    check(literal(u[0], "BODY[]") == fixture("03-large.eml"), "FETCH 3 BODY[] differs")
    c.command("NOOP")
    c.logout()
    say("compress: 200 KB fetched through DEFLATE")


SCENARIOS = {
    "compress": compress,
    "login-select": login_select,
    "search-fetch": search_fetch,
    "store-copy-move-expunge": store_copy_move_expunge,
    "append": append,
    "idle": idle,
    "auth-plain": auth_plain,
    "errors": errors,
}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in SCENARIOS:
        sys.exit("usage: golden.py SCENARIO PORT DOVECOT_DIR\nscenarios: " + " ".join(SCENARIOS))
    name, port, dovecot_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    try:
        SCENARIOS[name](port, dovecot_dir)
    except Failure as e:
        sys.exit("golden.py %s: FAILED: %s" % (name, e))
    except EOFError:
        sys.exit("golden.py %s: FAILED: the server closed the connection unexpectedly" % name)
    except (OSError, imaplib.IMAP4.error) as e:
        sys.exit("golden.py %s: FAILED: %s: %s" % (name, type(e).__name__, e))


if __name__ == "__main__":
    main()
