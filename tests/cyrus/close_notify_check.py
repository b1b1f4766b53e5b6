#!/usr/bin/env python3
"""Check whether an IMAP server sends a TLS close_notify after LOGOUT.

Usage: close_notify_check.py PORT implicit|starttls CAFILE   (connects to 127.0.0.1,
logs in as nell/ASecretPassword). Prints "recv after LOGOUT -> b''" if close_notify
was received, or "SSLEOFError ... EOF occurred in violation of protocol" if the server
just closed TCP. suppress_ragged_eofs=False is essential: with Python's default (True)
a missing close_notify also reads as b''. Also lists the TLS records seen afterwards
(msg_callback: direction, content type, message type, first bytes).
"""
import socket, ssl, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=sys.argv[3])
log = []
def cb(conn, direction, version, content_type, msg_type, data):
    log.append((direction, str(content_type), str(msg_type), bytes(data[:2]).hex()))
ctx._msg_callback = cb
raw = socket.create_connection(("127.0.0.1", port))
if mode == "starttls":
    f = raw.makefile("rb")
    print("S:", f.readline())
    raw.sendall(b"s STARTTLS\r\n")
    print("S:", f.readline())
s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
print("TLS", s.version())
buf = b""
def readline():
    global buf
    while b"\r\n" not in buf:
        d = s.recv(65536)
        if not d: raise EOFError("clean EOF")
        buf += d
    line, buf = buf.split(b"\r\n", 1)
    return line
if mode == "implicit":
    print("S:", readline()[:60])
s.sendall(b"a LOGIN nell ASecretPassword\r\n")
while not readline().startswith(b"a "): pass
s.sendall(b"c LOGOUT\r\n")
while True:
    l = readline(); print("S:", l)
    if l.startswith(b"c "): break
n = len(log)
try:
    d = s.recv(65536)
    print("recv after LOGOUT ->", repr(d), "(b'' = close_notify was received)")
except Exception as e:
    print("recv after LOGOUT ->", type(e).__name__, e)
for r in log[n:]:
    print("  record after tagged OK:", r)
