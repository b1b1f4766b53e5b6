#!/usr/bin/env python3
"""Drive the real Thunderbird, headless, through a first sync of one IMAP account.

Usage:
  thunderbird.py --host 127.0.0.1 --port PORT --security plain|starttls|tls \\
      --user nell --password ASecretPassword --profile DIR [--ca CA.pem] \\
      [--compress|--no-compress] [--expect-messages N] [--timeout SECONDS] \\
      [--imap-log PATH]

It builds a fresh profile in DIR (which must be empty or absent): user.js with the account,
the password in logins.json (encrypted with Thunderbird's own NSS), and the CA, if given,
trusted in the profile's cert9.db. It starts Thunderbird headless with Marionette and the
IMAP log on, asks Thunderbird itself (through Marionette, chrome context) until every message
of every folder is downloaded for offline use and nothing moves any more, quits it cleanly
and prints one JSON object on stdout:

  {"folders": {"INBOX": {"total": 3, "offline": 3}, ...}, "messages_offline": N,
   "connections": C, "commands": ["CAPABILITY", ...], "bad": 0, "no": 0,
   "seconds": 14.2, "subjects": [...], "skipped_folders": ["Junk", "Trash"]}

Exit 0 on success; non-zero with a message (and the tail of the IMAP log) on stderr otherwise.
Only Python's standard library is used. See README-thunderbird.md beside this file.
"""

import argparse
import base64
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

TB_DIR = "/usr/lib/thunderbird"
TB_BIN = os.path.join(TB_DIR, "thunderbird")
CA_NICKNAME = "imapscope-test-ca"
SOCKET_TYPES = {"plain": 0, "starttls": 2, "tls": 3}

# Sync is complete once the snapshot has not changed for this long (and the log is idle).
STABLE_SECONDS = 3.0
POLL_INTERVAL = 0.5
QUIT_GRACE_SECONDS = 15.0


class HarnessError(Exception):
    """A failure to report on stderr (with the IMAP log tail when there is one)."""


def log(msg):
    print(f"thunderbird.py: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------

def prefs_for(args):
    """Every pref the profile needs, as a dict (written to user.js)."""
    imap = "mail.server.server1."
    prefs = {
        # --- The account: one IMAP server plus the mandatory "Local Folders". ---
        "mail.accountmanager.accounts": "account1,account2",
        "mail.accountmanager.defaultaccount": "account1",
        "mail.accountmanager.localfoldersserver": "server2",
        "mail.account.account1.identities": "id1",
        "mail.account.account1.server": "server1",
        "mail.account.account2.server": "server2",
        "mail.identity.id1.fullName": args.user,
        "mail.identity.id1.useremail": f"{args.user}@example.invalid",
        "mail.identity.id1.valid": True,
        imap + "type": "imap",
        imap + "hostname": args.host,
        imap + "port": args.port,
        imap + "socketType": SOCKET_TYPES[args.security],
        imap + "userName": args.user,
        imap + "name": f"{args.user}@{args.host}",
        imap + "authMethod": 3,  # "normal password": AUTHENTICATE PLAIN or LOGIN
        imap + "login_at_startup": True,
        imap + "check_new_mail": True,
        # Bodies, not just headers: new folders get the Offline flag and autosync fetches them.
        imap + "offline_download": True,
        imap + "autosync_offline_stores": True,
        imap + "use_idle": True,
        imap + "use_compress_deflate": bool(args.compress),
        "mail.server.server2.type": "none",
        "mail.server.server2.hostname": "Local Folders",
        "mail.server.server2.userName": "nobody",
        "mail.server.server2.name": "Local Folders",

        # --- Stay online with only loopback: otherwise it may start offline, silently. ---
        "offline.autoDetect": False,
        "offline.startup_state": 2,  # always online
        "network.manage-offline-status": False,
        "network.proxy.type": 0,  # no system proxy between us and 127.0.0.1
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
        "network.dns.disablePrefetch": True,
        "network.prefetch-next": False,
        "network.http.speculative-parallel-limit": 0,
        "network.trr.mode": 5,  # no DNS over HTTPS
        "security.OCSP.enabled": 0,  # no OCSP fetch for the proxy's certificate
        "security.remote_settings.crlite_filters.enabled": False,
        "security.remote_settings.intermediates.enabled": False,

        # --- No first-run UI, so nothing waits on a click. ---
        "mail.provider.enabled": False,
        "mailnews.start_page.enabled": False,
        "mailnews.start_page.override_url": "",
        "mail.shell.checkDefaultClient": False,
        "mail.rights.override": True,  # no "know your rights" bar
        "mail.rights.version": 1,
        "mail.spotlight.firstRunDone": True,
        "mail.winsearch.firstRunDone": True,
        "app.donation.eoy.version.viewed": 999,
        "mail.inappnotifications.enabled": False,
        "mail.biff.show_alert": False,
        "mail.biff.play_sound": False,
        "mail.biff.use_system_alert": False,
        "mail.cloud_files.enabled": False,

        # --- No telemetry, updates, remote settings, add-on or safe-browsing traffic. ---
        "app.update.disabledForTesting": True,
        "app.update.auto": False,
        "app.update.staging.enabled": False,
        "app.normandy.enabled": False,
        "toolkit.telemetry.enabled": False,
        "toolkit.telemetry.unified": False,
        "toolkit.telemetry.archive.enabled": False,
        "toolkit.telemetry.server": "",
        "datareporting.healthreport.uploadEnabled": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "datareporting.policy.dataSubmissionPolicyBypassNotification": True,
        "datareporting.policy.firstRunURL": "",
        "services.settings.server": "data:,#remote-settings-disabled",
        "extensions.update.enabled": False,
        "extensions.getAddons.cache.enabled": False,
        "extensions.blocklist.enabled": False,
        "extensions.systemAddon.update.enabled": False,
        "browser.safebrowsing.malware.enabled": False,
        "browser.safebrowsing.phishing.enabled": False,
        "browser.safebrowsing.downloads.enabled": False,
        "browser.safebrowsing.provider.mozilla.updateURL": "",
        "browser.search.update": False,
        "dom.push.connection.enabled": False,
        "mail.phishing.detection.enabled": False,
        "mailnews.auto_config_url": "",
        "mail.instrumentation.postUrl": "",
        "geo.provider.network.url": "",
        # The global search indexer only burns CPU on this 2-core box; it sends no IMAP.
        "mailnews.database.global.indexer.enabled": False,

        # --- Marionette on a free port (written to DIR/MarionetteActivePort). ---
        "marionette.port": 0,
    }
    return prefs


def write_user_js(profile, prefs):
    lines = ["// Written by tests/clients/thunderbird.py for one headless sync."]
    for name, value in prefs.items():
        # json.dumps gives a valid JS literal for str, bool and int.
        lines.append(f"user_pref({json.dumps(name)}, {json.dumps(value)});")
    with open(os.path.join(profile, "user.js"), "w") as f:
        f.write("\n".join(lines) + "\n")


def run_checked(cmd, what):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        raise HarnessError(f"{what} failed ({p.returncode}): {' '.join(cmd)}\n"
                           f"{p.stdout}{p.stderr}")


def create_cert_db(profile, ca):
    """cert9.db/key4.db with an empty primary password, and the CA trusted if given.

    certutil (the system NSS) runs first and alone; the SDR step afterwards opens the very
    same sql: database with Thunderbird's NSS, so there is one key4.db and no lock conflict.
    """
    db = "sql:" + profile
    run_checked(["certutil", "-N", "--empty-password", "-d", db], "certutil -N")
    if ca:
        # "C,," = trusted CA for TLS servers (not for mail or code signing).
        run_checked(["certutil", "-A", "-d", db, "-n", CA_NICKNAME, "-t", "C,,", "-i", ca],
                    "certutil -A")


def sdr_encrypt_in_child(profile, strings):
    """Encrypt strings with the profile's SDR key, in a child process.

    Thunderbird's libnss3.so needs its own libnssutil3.so (the system one, NSS 3.87, lacks
    symbols it needs) and its libsoftokn3.so needs libmozsqlite3.so: all found only with
    LD_LIBRARY_PATH, which must be set before a process starts. NSS's global state is also
    best confined to a process that ends. Hence a child process.
    """
    env = dict(os.environ, LD_LIBRARY_PATH=TB_DIR)
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--sdr-child", profile],
                       input=json.dumps(strings), capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise HarnessError(f"NSS SDR encryption failed: {p.stderr.strip()}")
    return json.loads(p.stdout)


class SECItem(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint),
                ("data", ctypes.POINTER(ctypes.c_ubyte)),
                ("len", ctypes.c_uint)]


def sdr_child(profile):
    """Child mode: read a JSON list of strings, print the list of base64 SDR blobs."""
    strings = json.load(sys.stdin)
    nss = ctypes.CDLL(os.path.join(TB_DIR, "libnss3.so"))
    slot_t, item_p = ctypes.c_void_p, ctypes.POINTER(SECItem)
    nss.NSS_InitReadWrite.argtypes = [ctypes.c_char_p]
    nss.PK11_GetInternalKeySlot.restype = slot_t
    nss.PK11_NeedUserInit.argtypes = [slot_t]
    nss.PK11_InitPin.argtypes = [slot_t, ctypes.c_char_p, ctypes.c_char_p]
    nss.PK11_CheckUserPassword.argtypes = [slot_t, ctypes.c_char_p]
    nss.PK11_FreeSlot.argtypes = [slot_t]
    nss.PK11SDR_Encrypt.argtypes = [item_p, item_p, item_p, ctypes.c_void_p]
    nss.PK11SDR_Decrypt.argtypes = [item_p, item_p, ctypes.c_void_p]
    nss.SECITEM_ZfreeItem.argtypes = [item_p, ctypes.c_int]

    if nss.NSS_InitReadWrite(("sql:" + profile).encode()) != 0:
        sys.exit(f"NSS_InitReadWrite(sql:{profile}) failed")
    slot = nss.PK11_GetInternalKeySlot()
    if not slot:
        sys.exit("PK11_GetInternalKeySlot failed")
    # certutil -N --empty-password already set an empty PIN; a bare DB would need this.
    if nss.PK11_NeedUserInit(slot):
        if nss.PK11_InitPin(slot, b"", b"") != 0:
            sys.exit("PK11_InitPin failed")
    # Log in with the empty password so PK11SDR_Encrypt can make/use the SDR key.
    if nss.PK11_CheckUserPassword(slot, b"") != 0:
        sys.exit("the profile's key4.db has a non-empty primary password")

    out = []
    for s in strings:
        raw = s.encode()
        buf = (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw)
        data = SECItem(0, buf, len(raw))
        keyid = SECItem(0, None, 0)  # empty key id: the default SDR key (created if absent)
        enc = SECItem(0, None, 0)
        if nss.PK11SDR_Encrypt(ctypes.byref(keyid), ctypes.byref(data), ctypes.byref(enc),
                               None) != 0:
            sys.exit("PK11SDR_Encrypt failed")
        blob = ctypes.string_at(enc.data, enc.len)
        # Round trip, so a bad blob fails here rather than as a password prompt later.
        dec = SECItem(0, None, 0)
        if (nss.PK11SDR_Decrypt(ctypes.byref(enc), ctypes.byref(dec), None) != 0
                or ctypes.string_at(dec.data, dec.len) != raw):
            sys.exit("PK11SDR_Decrypt round trip failed")
        nss.SECITEM_ZfreeItem(ctypes.byref(enc), 0)
        nss.SECITEM_ZfreeItem(ctypes.byref(dec), 0)
        out.append(base64.b64encode(blob).decode())
    nss.PK11_FreeSlot(slot)
    if nss.NSS_Shutdown() != 0:
        sys.exit("NSS_Shutdown failed")
    json.dump(out, sys.stdout)


def write_logins_json(profile, host, user, password):
    enc_user, enc_pass = sdr_encrypt_in_child(profile, [user, password])
    now_ms = int(time.time() * 1000)
    origin = f"imap://{host}"  # no port: that is how Thunderbird looks IMAP passwords up
    logins = {
        "nextId": 2,
        "logins": [{
            "id": 1,
            "hostname": origin,
            "httpRealm": origin,
            "formSubmitURL": None,
            "usernameField": "",
            "passwordField": "",
            "encryptedUsername": enc_user,
            "encryptedPassword": enc_pass,
            "guid": "{%s}" % uuid.uuid4(),
            "encType": 1,
            "timeCreated": now_ms,
            "timeLastUsed": now_ms,
            "timePasswordChanged": now_ms,
            "timesUsed": 1,
        }],
        "potentiallyVulnerablePasswords": [],
        "dismissedBreachAlertsByLoginGUID": {},
        "version": 3,
    }
    with open(os.path.join(profile, "logins.json"), "w") as f:
        json.dump(logins, f)


def create_profile(args):
    profile = args.profile
    if os.path.exists(profile) and os.listdir(profile):
        raise HarnessError(f"profile directory {profile} is not empty: a fresh one is needed")
    os.makedirs(profile, exist_ok=True)
    write_user_js(profile, prefs_for(args))
    create_cert_db(profile, args.ca)
    write_logins_json(profile, args.host, args.user, args.password)


# --------------------------------------------------------------------------------------
# Marionette (length-prefixed JSON over TCP)
# --------------------------------------------------------------------------------------

class MarionetteError(Exception):
    pass


class Marionette:
    """A minimal Marionette client: one connection, one session, blocking calls."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(POLL_INTERVAL)  # short reads, so callers can check meanwhile
        self.buf = b""
        self.msgid = 0
        self.session = False
        hello = self._recv(time.monotonic() + 10, None)
        # {"applicationType": "gecko", "marionetteProtocol": 3}
        if not isinstance(hello, dict) or hello.get("marionetteProtocol") != 3:
            raise MarionetteError(f"unexpected Marionette greeting: {hello!r}")

    def _recv(self, give_up, check):
        while True:
            head, sep, rest = self.buf.partition(b":")
            if sep and len(rest) >= int(head):
                size = int(head)
                frame, self.buf = rest[:size], rest[size:]
                return json.loads(frame)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                if check:
                    check()  # may raise, e.g. when Thunderbird died or the log shows a failure
                if time.monotonic() > give_up:
                    raise MarionetteError("timed out waiting for a reply")
                continue
            if not chunk:
                raise MarionetteError("Marionette connection closed")
            self.buf += chunk

    def call(self, command, params=None, timeout=30.0, check=None):
        """Send one command, return its result; check() runs every POLL_INTERVAL meanwhile."""
        self.msgid += 1
        body = json.dumps([0, self.msgid, command, params or {}]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        give_up = time.monotonic() + timeout
        while True:
            msg = self._recv(give_up, check)
            if isinstance(msg, list) and len(msg) == 4 and msg[0] == 1 and msg[1] == self.msgid:
                break
        _, _, error, result = msg
        if error:
            raise MarionetteError(f"{command}: {error.get('error')}: {error.get('message')}")
        return result

    def script(self, source, check=None):
        """Run JS in the current (chrome) context; a returned Promise is awaited."""
        res = self.call("WebDriver:ExecuteScript",
                        {"script": source, "args": [], "sandbox": "system"}, check=check)
        return res.get("value") if isinstance(res, dict) else res

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# What Thunderbird knows about the account, from its own folder databases. Runs in the
# chrome context (system principal), so it sees the same objects as Thunderbird's UI.
STATUS_JS = r"""
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
const UID_UNKNOWN = 4294967295;  // nsIDBFolderInfo.imapUidValidity before the first SELECT
const out = { servers: 0, folders: {}, subjects: [], errors: [] };
for (const account of MailServices.accounts.accounts) {
  const server = account.incomingServer;
  if (!server || server.type != "imap") continue;
  out.servers++;
  for (const folder of server.rootFolder.descendants) {
    let name = folder.name;
    try { name = folder.QueryInterface(Ci.nsIMsgImapMailFolder).onlineName || name; } catch (e) {}
    const f = { total: 0, offline: 0, selected: false,
                noselect: (folder.flags & Ci.nsMsgFolderFlags.ImapNoselect) != 0,
                // Thunderbird marks new folders for offline use, except Trash and Junk.
                offlineFolder: (folder.flags & Ci.nsMsgFolderFlags.Offline) != 0 };
    out.folders[name] = f;
    if (f.noselect) continue;
    try {
      f.total = folder.getTotalMessages(false);
      const db = folder.msgDatabase;
      const uv = db.dBFolderInfo.imapUidValidity;
      f.selected = uv != UID_UNKNOWN && uv != -1 && uv != 0;
      for (const hdr of db.enumerateMessages()) {
        if (hdr.flags & Ci.nsMsgMessageFlags.Offline) {
          f.offline++;
          out.subjects.push(hdr.mime2DecodedSubject || hdr.subject || "");
        }
      }
    } catch (e) {
      out.errors.push(name + ": " + e);
    }
  }
}
try {
  // The queues of the background "autosync" that downloads bodies for offline use.
  const asm = Cc["@mozilla.org/imap/autosyncmgr;1"].getService(Ci.nsIAutoSyncManager);
  out.autosync = [asm.discoveryQLength, asm.updateQLength, asm.downloadQLength];
} catch (e) { out.errors.push("autosync: " + e); }
return out;
"""


# --------------------------------------------------------------------------------------
# The IMAP log (MOZ_LOG=sync,IMAP:5)
# --------------------------------------------------------------------------------------

# One record per line, e.g.
#   [Parent 123: IMAP]: I/IMAP 7f94527f8100:127.0.0.1:S-INBOX:SendData: 16 UID fetch 1:* (FLAGS)
#   [Parent 123: IMAP]: I/IMAP 7f94527f8100:127.0.0.1:S-INBOX:CreateNewLineFromSocket: 16 OK ...
# The hex number is the connection (an nsImapProtocol); NA/A/S-folder is its IMAP state.
LOG_IO = re.compile(r"I/IMAP ([0-9a-f]+):(.*?):(SendData|CreateNewLineFromSocket): ?(.*)$")
LOG_THREAD_START = re.compile(r"ImapThreadMainLoop entering \[this=([0-9a-f]+)\]")
LOG_THREAD_END = re.compile(r"ImapThreadMainLoop leaving \[this=([0-9a-f]+)\]")
SUPPRESSED = "Logging suppressed for this command"
# Failures after which Thunderbird would only wait on a dialog: stop at once, and say why.
FATAL = [
    (re.compile(r"Security error - error code=(\S+)"), "TLS handshake failed: {0}"),
    (re.compile(r"login failed entirely"), "login failed (wrong user or password?)"),
    (re.compile(r"URL failed with code 0x804b000d"), "connection refused"),
    (re.compile(r"URL failed with code 0x804b000e"), "connection timed out"),
    (re.compile(r"URL failed with code 0x804b001e"), "unknown host"),
]
TAGGED_REPLY = re.compile(r"^(\S+) (OK|NO|BAD)\b", re.IGNORECASE)


class Connection:
    def __init__(self):
        self.greeted = False
        self.outstanding = {}  # tag -> upper-cased command name, until its tagged reply
        self.idling = False  # IDLE sent and "+ idling" received
        self.hidden_login = False  # a LOGIN whose whole line the log suppressed


class ImapLog:
    """Follows Thunderbird's IMAP log as it grows and keeps what the harness reports.

    Thunderbird appends ".moz_log" to MOZ_LOG_FILE unless the name already ends so; both
    names are tried.
    """

    def __init__(self, path):
        self.paths = [path] if path.endswith(".moz_log") else [path + ".moz_log", path]
        self.offset = 0
        self.partial = b""
        self.conns = {}
        self.connections = 0
        self.commands = []
        self.bad = 0
        self.no = 0
        self.fatal = None  # the first fatal failure seen in the log, as a sentence

    @property
    def path(self):
        for p in self.paths:
            if os.path.exists(p):
                return p
        return self.paths[0]

    def update(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()  # an unfinished last line waits for the next read
        for raw in lines:
            self.feed(raw.decode("utf-8", "replace").rstrip("\r"))

    def feed(self, line):
        if self.fatal is None:
            for pattern, message in FATAL:
                m = pattern.search(line)
                if m:
                    self.fatal = message.format(*m.groups())
        m = LOG_THREAD_START.search(line)
        if m:
            self.conns[m.group(1)] = Connection()  # an address may be reused: start afresh
            return
        m = LOG_THREAD_END.search(line)
        if m:
            self.conns.pop(m.group(1), None)
            return
        m = LOG_IO.search(line)
        if not m:
            return
        cid, where, kind, data = m.groups()
        data = data.rstrip("\r")
        conn = self.conns.setdefault(cid, Connection())
        state = where.rsplit(":", 1)[-1]  # NA, A or S-<folder>
        if kind == "SendData":
            self.sent(conn, state, data)
        else:
            self.received(conn, data)

    def sent(self, conn, state, data):
        if data.startswith(SUPPRESSED):
            # Either credentials after an AUTHENTICATE's "+", or a whole LOGIN command.
            if "AUTHENTICATE" not in conn.outstanding.values() and state == "NA":
                conn.hidden_login = True
                self.commands.append("LOGIN")
            return
        if data.upper() == "DONE":  # ends IDLE; the IDLE's tagged OK follows
            conn.idling = False
            return
        words = data.split()
        if len(words) < 2:
            return  # a continuation (e.g. a literal's data), not a command
        tag, name = words[0], words[1].upper()
        if name == "UID" and len(words) > 2:
            name += " " + words[2].upper()
        conn.outstanding[tag] = name
        self.commands.append(name)

    def received(self, conn, data):
        if not conn.greeted:
            # The greeting ("* OK", "* PREAUTH") is the first line of a connection; a failed
            # connect or handshake "reads" "(null)" or "Security error ..." instead.
            if data.startswith("* "):
                conn.greeted = True
                self.connections += 1
            return
        if data.startswith("+") and "IDLE" in conn.outstanding.values():
            conn.idling = True  # "+ idling": the server accepted IDLE
        m = TAGGED_REPLY.match(data)
        if not m:
            return
        tag, status = m.group(1), m.group(2).upper()
        if tag in conn.outstanding:
            del conn.outstanding[tag]
        elif conn.hidden_login:
            conn.hidden_login = False  # the reply to the LOGIN we could not see
        else:
            return  # a body line that merely looks like a reply
        if status == "NO":
            self.no += 1
        elif status == "BAD":
            self.bad += 1

    @staticmethod
    def waiting_for(conn):
        """What a connection waits for: not yet greeted, or commands without a reply (an
        IDLE that the server accepted is not waiting: that is where connections rest)."""
        if not conn.greeted:
            return ["(greeting)"]
        waiting = [n for n in conn.outstanding.values() if not (n == "IDLE" and conn.idling)]
        return waiting + (["LOGIN"] if conn.hidden_login else [])

    def quiet(self):
        return not any(self.waiting_for(c) for c in self.conns.values())

    def busy_summary(self):
        return {cid: w for cid, c in self.conns.items() if (w := self.waiting_for(c))}

    def tail(self, lines=40):
        try:
            with open(self.path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.path) - 200_000))
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(no IMAP log at {self.path}: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def finish(self, wanted):
        """After Thunderbird exits: the log under the name asked for, no empty child logs."""
        self.update()
        actual = self.path
        if actual != wanted and os.path.exists(actual) and not os.path.exists(wanted):
            os.rename(actual, wanted)
            self.paths = [wanted]
        base = wanted[:-len(".moz_log")] if wanted.endswith(".moz_log") else wanted
        d = os.path.dirname(base) or "."
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if name.startswith(os.path.basename(base) + ".child-") and os.path.getsize(p) == 0:
                os.remove(p)  # content processes log nothing about IMAP


# --------------------------------------------------------------------------------------
# Running Thunderbird
# --------------------------------------------------------------------------------------

def thunderbird_env(profile, imap_log):
    home = os.path.join(profile, "home")  # nothing read from or written to the real home
    os.makedirs(home, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS",
                        "XDG_RUNTIME_DIR", "MOZ_LOG", "MOZ_LOG_FILE", "LD_LIBRARY_PATH")}
    env.update({
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "TMPDIR": home,
        "MOZ_HEADLESS": "1",
        "MOZ_CRASHREPORTER_DISABLE": "1",
        "MOZ_DISABLE_AUTO_SAFE_MODE": "1",
        # "sync": every record is written at once, so the log can be followed while it
        # grows and nothing is lost when Thunderbird exits (without it the tail is cut).
        "MOZ_LOG": "sync,IMAP:5",
        "MOZ_LOG_FILE": imap_log,
    })
    return env


def watchdog(proc, imap, deadline, what):
    """A check() for long waits: fail at once if Thunderbird died, the log shows a fatal
    failure, or time is up."""
    def check():
        if proc.poll() is not None:
            raise HarnessError(f"Thunderbird exited {what} (status {proc.returncode})")
        imap.update()
        if imap.fatal:
            raise HarnessError(imap.fatal)
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out {what}")
    return check


def wait_for_marionette(proc, profile, imap, deadline):
    """Poll for DIR/MarionetteActivePort, then connect and open a chrome-context session."""
    port_file = os.path.join(profile, "MarionetteActivePort")
    check = watchdog(proc, imap, deadline, "while waiting for Marionette")
    while True:
        check()
        m = None
        try:
            with open(port_file) as f:
                m = Marionette(int(f.read().strip()))
        except (ValueError, OSError, MarionetteError):
            time.sleep(0.1)  # no file yet, half-written, or not listening yet
            continue
        # Marionette allows one session and NewSession waits for the main window, which
        # an error dialog at startup can hold up: so no retry, and the watchdog meanwhile.
        try:
            m.call("WebDriver:NewSession", {"capabilities": {}}, timeout=3600, check=check)
            m.session = True
            m.call("Marionette:SetContext", {"value": "chrome"}, check=check)
        except (OSError, MarionetteError) as e:
            m.close()
            raise HarnessError(f"Marionette session failed: {e}")
        except BaseException:
            m.close()
            raise
        return m


def start_thunderbird(profile, imap_log):
    out = open(os.path.join(profile, "thunderbird.out"), "wb")
    try:
        # Its own session (process group), so a terminal's Ctrl-C reaches only us and the
        # harness can end Thunderbird and its content processes together, by that id.
        return subprocess.Popen(
            [TB_BIN, "--headless", "--profile", profile, "--no-remote", "--marionette",
             # Thunderbird 153 refuses the chrome context to Marionette without this.
             "--remote-allow-system-access"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=thunderbird_env(profile, imap_log), start_new_session=True)
    finally:
        out.close()  # the child has its own copy


def stop_thunderbird(proc, marionette):
    """Quit cleanly (Marionette:Quit, else SIGTERM by PID); kill by PID as a last resort."""
    if proc.poll() is None:
        quit_sent = False
        if marionette is not None and marionette.session:
            try:
                marionette.call("Marionette:Quit", {}, timeout=QUIT_GRACE_SECONDS)
                quit_sent = True
            except (OSError, MarionetteError) as e:
                log(f"Marionette:Quit failed ({e}); sending SIGTERM")
        if not quit_sent:
            proc.terminate()  # Thunderbird shuts down cleanly on SIGTERM too
        try:
            proc.wait(timeout=QUIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log(f"Thunderbird (pid {proc.pid}) did not exit; killing it")
            proc.kill()
            proc.wait()
    if marionette is not None:
        marionette.close()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftover content processes of this run only
    except (ProcessLookupError, PermissionError):
        pass


def sync_state(status, imap, args):
    """Why the sync is not complete yet (empty list: complete as far as this poll sees)."""
    waits = []
    if status["servers"] != 1:
        waits.append("the IMAP account is not loaded")
    if status["errors"]:
        waits.append("status errors: " + "; ".join(status["errors"]))
    folders = status["folders"]
    if imap.connections == 0:
        waits.append("no IMAP connection yet")
    if len(folders) <= 1:
        waits.append("folder list not known yet")  # only INBOX exists before LIST
    for name, f in sorted(folders.items()):
        if f["noselect"] or not f["offlineFolder"]:
            continue
        if not f["selected"]:
            waits.append(f"{name}: not selected yet")
        elif f["offline"] < f["total"]:
            waits.append(f"{name}: {f['offline']}/{f['total']} bodies offline")
    if any(status.get("autosync") or [0]):
        waits.append(f"autosync queues (discovery, update, download) {status['autosync']}")
    if not imap.quiet():
        waits.append(f"commands in flight {imap.busy_summary()}")
    total = sum(f["offline"] for f in folders.values())
    if args.expect_messages is not None and total < args.expect_messages:
        waits.append(f"{total} messages offline, expecting {args.expect_messages}")
    return waits


def wait_for_sync(m, proc, imap, args, started, deadline):
    """Poll Thunderbird and its log until the sync is complete and has stayed so."""
    stable_key, stable_since, waits, status = None, None, ["not polled yet"], None
    check = watchdog(proc, imap, float("inf"), "during the sync")
    while True:
        check()
        try:
            status = m.script(STATUS_JS, check=check)
        except MarionetteError as e:
            status = None
            waits = [f"status script failed: {e}"]  # e.g. while the main window opens
        except OSError as e:
            raise HarnessError(f"lost the Marionette connection: {e}")
        if status is not None:
            waits = sync_state(status, imap, args)
            # Unchanged counts and no new command for STABLE_SECONDS: nothing is moving.
            key = (json.dumps(status["folders"], sort_keys=True), len(imap.commands))
            now = time.monotonic()
            if waits or key != stable_key:
                stable_key, stable_since = key, now
            elif now - stable_since >= STABLE_SECONDS:
                return status, stable_since - started
            if args.verbose:
                log(f"{now - started:5.1f}s {'; '.join(waits) or 'complete, settling'}")
        if time.monotonic() > deadline:
            raise HarnessError(f"sync not complete after {args.timeout:g} s: "
                               + ("; ".join(waits) or "still changing"))
        time.sleep(POLL_INTERVAL)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Sync one IMAP account with the real Thunderbird, headless, and report.")
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--security", required=True, choices=sorted(SOCKET_TYPES))
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--profile", required=True, help="new profile directory (empty or absent)")
    p.add_argument("--ca", help="PEM CA certificate to trust for the server (or proxy)")
    p.add_argument("--compress", action=argparse.BooleanOptionalAction, default=True,
                   help="use COMPRESS=DEFLATE if offered (Thunderbird's default: on)")
    p.add_argument("--expect-messages", type=int, metavar="N",
                   help="also wait until at least N messages are offline")
    p.add_argument("--timeout", type=float, default=90.0, metavar="SECONDS")
    p.add_argument("--imap-log", metavar="PATH", help="IMAP log (default PROFILE/imap.log)")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    args.profile = os.path.abspath(args.profile)
    args.imap_log = os.path.abspath(args.imap_log or os.path.join(args.profile, "imap.log"))
    if args.ca:
        args.ca = os.path.abspath(args.ca)
        if not os.path.isfile(args.ca):
            p.error(f"--ca {args.ca}: no such file")
    return args


def main(argv):
    if len(argv) == 2 and argv[0] == "--sdr-child":
        sdr_child(argv[1])
        return 0
    args = parse_args(argv)
    for tool in (TB_BIN, shutil.which("certutil")):
        if not tool or not os.access(tool, os.X_OK):
            log(f"missing {tool or 'certutil'} (apt-get install thunderbird libnss3-tools)")
            return 2
    imap = ImapLog(args.imap_log)
    proc = marionette = None
    try:
        create_profile(args)
        started = time.monotonic()
        deadline = started + args.timeout
        proc = start_thunderbird(args.profile, args.imap_log)
        try:
            marionette = wait_for_marionette(proc, args.profile, imap, deadline)
            status, seconds = wait_for_sync(marionette, proc, imap, args, started, deadline)
        finally:
            stop_thunderbird(proc, marionette)
            imap.finish(args.imap_log)
    except HarnessError as e:
        log(f"error: {e}")
        if proc is not None:
            log(f"profile {args.profile}, pid {proc.pid}; IMAP log tail ({imap.path}):")
            print(imap.tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

    folders = {name: {"total": f["total"], "offline": f["offline"]}
               for name, f in sorted(status["folders"].items())}
    result = {
        "folders": folders,
        "messages_offline": sum(f["offline"] for f in folders.values()),
        "connections": imap.connections,
        "commands": imap.commands,
        "bad": imap.bad,
        "no": imap.no,
        "seconds": round(seconds, 1),
        "subjects": sorted(status["subjects"]),
        # Folders Thunderbird does not keep offline (Trash and Junk by default): it neither
        # selects nor downloads them on a first sync, so their counts stay 0 above.
        "skipped_folders": sorted(name for name, f in status["folders"].items()
                                  if not f["offlineFolder"] and not f["noselect"]),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
