"""TLS clients for imapscope's integration tests, with Python's imaplib and ssl.

Usage: tls_session.py MODE PORT [CAFILE]
  ssl        IMAP4_SSL to PORT, trusting only CAFILE, checking the name localhost
  starttls   IMAP4 to PORT, then starttls() with the same checks
  plain      IMAP4 to PORT without TLS (the none/tls relay)
  untrusted  IMAP4_SSL with the default trust store: must fail to verify
  refused    IMAP4 to PORT: log in, then STARTTLS (refused after login), then NOOP in plain
  injection  raw socket: 'STARTTLS' and a pipelined command in one write, then TLS,
             then LOGIN and LOGOUT; prints whether the pipelined command was answered
  slow       implicit TLS with a small receive buffer: FETCH message 2 three times, each
             time waiting while the sockets fill, then reading in small bites, as a busy or
             distant client does; prints how much of each answer came and whether the last
             tagged OK did (each read waits 15 s at most)
Prints one JSON line with what it saw.
"""

import imaplib
import json
import socket
import ssl
import sys
import time

USER, PASSWORD = "nell", "ASecretPassword"


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def session(c):
    c.login(USER, PASSWORD)
    typ, data = c.select("INBOX")
    assert typ == "OK", data
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK", data
    body = data[0][1]
    c.logout()
    return body


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    cafile = sys.argv[3] if len(sys.argv) > 3 else None
    out = {"mode": mode}
    if mode == "ssl":
        c = imaplib.IMAP4_SSL("localhost", port, ssl_context=context(cafile))
        out["cipher"] = c.sock.cipher()[0]
        out["body"] = session(c).decode()
    elif mode == "starttls":
        c = imaplib.IMAP4("localhost", port)
        typ, _ = c.starttls(ssl_context=context(cafile))
        assert typ == "OK"
        out["cipher"] = c.sock.cipher()[0]
        out["body"] = session(c).decode()
    elif mode == "plain":
        c = imaplib.IMAP4("127.0.0.1", port)
        out["body"] = session(c).decode()
    elif mode == "untrusted":
        try:
            imaplib.IMAP4_SSL("localhost", port, ssl_context=ssl.create_default_context())
            out["error"] = None
        except ssl.SSLCertVerificationError as e:
            out["error"] = e.verify_message
    elif mode == "refused":
        # imaplib itself will not send STARTTLS after login: a raw socket does.
        raw = socket.create_connection(("127.0.0.1", port))
        f = raw.makefile("rb")
        f.readline()  # greeting

        def command(tag, text):
            raw.sendall(("%s %s\r\n" % (tag, text)).encode())
            while True:
                line = f.readline().decode()
                if not line or line.startswith(tag + " "):
                    return line.split()[1] if line else None

        command("r1", "LOGIN %s %s" % (USER, PASSWORD))
        out["starttls"] = command("r2", "STARTTLS")
        out["noop"] = command("r3", "NOOP")
        command("r4", "LOGOUT")
    elif mode == "injection":
        raw = socket.create_connection(("127.0.0.1", port))
        f = raw.makefile("rb")
        f.readline()  # greeting
        raw.sendall(b"s1 STARTTLS\r\ns2 CAPABILITY\r\n")
        lines = []
        while True:
            line = f.readline()
            lines.append(line.decode())
            if line.startswith(b"s1 "):
                break
        out["starttls"] = lines[-1].split()[1]
        tls = context(cafile).wrap_socket(raw, server_hostname="localhost")
        tf = tls.makefile("rb")
        tls.sendall(b"s3 LOGIN nell ASecretPassword\r\n")
        seen = []
        while True:
            line = tf.readline()
            seen.append(line.decode())
            if line.startswith(b"s3 "):
                out["login"] = line.split()[1].decode()
                break
        tls.sendall(b"s4 LOGOUT\r\n")
        while True:
            line = tf.readline()
            seen.append(line.decode())
            if not line or line.startswith(b"s4 "):
                break
        out["pipelined_answered"] = any(l.startswith("s2 ") for l in lines + seen)
        out["lines"] = lines + seen
    elif mode == "slow":
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        raw.connect(("127.0.0.1", port))
        tls = context(cafile).wrap_socket(raw, server_hostname="localhost")
        tls.settimeout(15)
        got = bytearray()

        def until(tag, bite=65536, pause=0.0):
            """Reads until the last line starts with `tag`; False on silence or close."""
            while True:
                tail = bytes(got[-300:])
                if tail.endswith(b"\r\n") and tail[:-2].rsplit(b"\r\n", 1)[-1].startswith(tag + b" "):
                    return True
                try:
                    piece = tls.recv(bite)
                except socket.timeout:
                    return False
                if not piece:
                    return False
                got.extend(piece)
                if pause:
                    time.sleep(pause)

        until(b"*")
        tls.sendall(b"s1 LOGIN %s %s\r\ns2 SELECT INBOX\r\n" % (USER.encode(), PASSWORD.encode()))
        until(b"s2")
        out["received"] = []
        for tag in (b"s3", b"s4", b"s5"):
            del got[:]
            tls.sendall(tag + b" FETCH 2 BODY.PEEK[]\r\n")
            time.sleep(0.5)  # imapscope's writes to this client now find its socket full
            complete = until(tag, bite=4096, pause=0.0001)
            out["received"].append(len(got))
            if not complete:
                break
        out["complete"] = complete
        tls.close()
    else:
        sys.exit("unknown mode " + mode)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
