"""A normal mail-client session with Python's imaplib, for imapscope's integration tests.

Usage: imaplib_session.py PORT USER PASSWORD [CONNECTIONS]
Logs in, lists, selects INBOX, fetches every message whole, appends one (imaplib uses a
synchronizing literal), searches, logs out. With CONNECTIONS > 1, runs that many sessions at
once in threads, as a desktop client does. Prints one JSON line per session with what it saw.
"""

import imaplib
import json
import sys
import threading


def session(port, user, password, n, results):
    c = imaplib.IMAP4("127.0.0.1", port)
    typ, _ = c.login(user, password)
    assert typ == "OK"
    c.list()
    typ, data = c.select("INBOX")
    assert typ == "OK", data
    count = int(data[0])
    sizes = []
    if count:
        typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        sizes = [len(part[1]) for part in data if isinstance(part, tuple)]
    typ, data = c.append("INBOX", None, None, b"Subject: appended %d\r\n\r\nhello\r\n" % n)
    assert typ == "OK", data
    typ, data = c.search(None, "ALL")
    assert typ == "OK"
    c.logout()
    results.append({"session": n, "exists": count, "sizes": sizes})


def main():
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    connections = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    results = []
    threads = [
        threading.Thread(target=session, args=(port, user, password, n, results))
        for n in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(results) != connections:
        sys.exit("only %d of %d sessions finished" % (len(results), connections))
    for r in sorted(results, key=lambda r: r["session"]):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
