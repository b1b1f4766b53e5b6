"""Python peers for `cargo bench --bench load -- peers`: an IMAP-ish TLS server and a client
that measures several paths to it in turns.

The load benchmark's own client and responder are Rust and rustls, fast enough that on two
cores they leave a relay little room. Mail clients and servers are rarely that quick, and
issue 14's independent measurement used Python's ssl module on both ends; this file is that
kind of pair, so that the benchmark shows the relay between realistic peers too.

    python3 peers.py server PORT_FILE CERT KEY     (TLS)
    python3 peers.py server PORT_FILE plain        (plain TCP)
    python3 peers.py client FETCHES BODY_MIB PINGS PORT[/PID]...        (TLS)
    python3 peers.py client-plain FETCHES BODY_MIB PINGS PORT[/PID]...  (plain TCP)

The server answers `FETCH n BODY[]` with an n MiB literal, `NOOP` with one line, `LOGOUT`
with BYE. The client FETCHes on every port in turns (one FETCH per port, then the next round,
in a shuffled order), then NOOPs in turns, and prints one JSON object: per port,
MB/s over all FETCHes, and the p50 and p99 NOOP round trip in microseconds.

CPU: with PEERS_SERVER_PID set to the server's process, and `/PID` after a port naming the
relay on that path, each FETCH is bracketed by readings of the CPU time of this client, the
server and that relay (from /proc, see `cpu_seconds`), and the result adds, per path, each party's
CPU seconds per GB and the cores it kept busy while that path's FETCHes ran. Those say whether
a path is bound by the CPU all parties share.
"""

import json
import os
import random
import socket
import ssl
import sys
import threading
import time


def serve(port_file, cert, key):
    context = None
    if cert != "plain":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    body = b"x" * (64 << 20)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=session, args=(context, conn, body), daemon=True).start()


def session(context, conn, body):
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = context.wrap_socket(conn, server_side=True) if context else conn
        tls.sendall(b"* OK peers.py ready\r\n")
        lines = tls.makefile("rb")
        for line in lines:
            words = line.split()
            if len(words) < 2:
                continue
            tag, command = words[0], words[1].upper()
            if command == b"FETCH":
                n = int(words[2]) << 20
                tls.sendall(b"* %s FETCH (BODY[] {%d}\r\n" % (words[2], n))
                view = memoryview(body)
                sent = 0
                while sent < n:
                    step = min(n - sent, len(body))
                    tls.sendall(view[:step])
                    sent += step
                tls.sendall(b")\r\n" + tag + b" OK FETCH done\r\n")
            elif command == b"LOGOUT":
                tls.sendall(b"* BYE\r\n" + tag + b" OK LOGOUT done\r\n")
                break
            else:
                tls.sendall(tag + b" OK " + command + b" done\r\n")
        tls.close()
    except (OSError, ValueError):
        pass


class Session:
    def __init__(self, port, tls=True):
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = raw
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.tls = context.wrap_socket(raw, server_hostname="localhost")
        self.buf = bytearray(1 << 20)
        self.pending = b""
        self.line()

    def line(self):
        while b"\n" not in self.pending:
            n = self.tls.recv_into(self.buf)
            if n == 0:
                raise EOFError("closed")
            self.pending += self.buf[:n]
        line, _, self.pending = self.pending.partition(b"\n")
        return line

    def until_tagged(self, tag):
        while not self.line().startswith(tag + b" "):
            pass

    def fetch(self, tag, mib):
        start = time.perf_counter()
        self.tls.sendall(b"%s FETCH %d BODY[]\r\n" % (tag, mib))
        head = self.line()
        n = int(head[head.rindex(b"{") + 1 : head.rindex(b"}")])
        got = min(n, len(self.pending))
        self.pending = self.pending[got:]
        while got < n:
            got += self.tls.recv_into(self.buf, min(len(self.buf), n - got))
        self.until_tagged(tag)
        return time.perf_counter() - start

    def noop(self, tag):
        start = time.perf_counter()
        self.tls.sendall(b"%s NOOP\r\n" % tag)
        self.until_tagged(tag)
        return time.perf_counter() - start


def turn_order(round, n):
    """The paths' order in one round: shuffled, the same in every run. A fixed rotation kept
    each path's predecessor, and a round trip right after one through the same program (its
    code still in the caches) came out 10-30 us quicker."""
    order = list(range(n))
    random.Random(round).shuffle(order)
    return order


def cpu_seconds(pid):
    """CPU time of process `pid`, every thread, in seconds (the scheduler's own count in
    schedstat, to the nanosecond: /proc/PID/stat's utime and stime are adjusted to stay
    monotonic and can stand still for many milliseconds, which put one path's work on
    another path's FETCHes). A thread that ends between two readings takes its time along."""
    total = 0
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def measure(fetches, mib, pings, paths, tls=True):
    ports = [int(p.split("/")[0]) for p in paths]
    relays = [int(p.split("/")[1]) if "/" in p else 0 for p in paths]
    server = int(os.environ.get("PEERS_SERVER_PID", "0"))
    parties = lambda k: (os.getpid(), relays[k], server)
    sessions = [Session(p, tls) for p in ports]
    for s in sessions:
        s.fetch(b"w", mib)
    seconds = [0.0] * len(ports)
    cpu = [[0.0, 0.0, 0.0] for _ in ports]
    for i in range(fetches):
        for k in turn_order(i, len(ports)):
            before = [cpu_seconds(p) if p else 0.0 for p in parties(k)]
            seconds[k] += sessions[k].fetch(b"f%d" % i, mib)
            after = [cpu_seconds(p) if p else 0.0 for p in parties(k)]
            for j in range(3):
                cpu[k][j] += after[j] - before[j]
    times = [[] for _ in ports]
    for i in range(pings):
        for k in turn_order(i, len(ports)):
            times[k].append(sessions[k].noop(b"n%d" % i) * 1e6)
    result = {}
    gb = fetches * (mib << 20) / 1e9
    for k, port in enumerate(ports):
        t = sorted(times[k])
        result[str(port)] = {
            "mbps": fetches * (mib << 20) / seconds[k] / 1e6,
            "p50": t[(len(t) - 1) // 2],
            "p99": t[int((len(t) - 1) * 0.99)],
            "cpu_s_per_gb": {
                name: cpu[k][j] / gb
                for j, name in enumerate(("client", "relay", "server"))
                if parties(k)[j]
            },
            "cores": {
                name: cpu[k][j] / seconds[k]
                for j, name in enumerate(("client", "relay", "server"))
                if parties(k)[j]
            },
        }
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        fetches, mib, pings = (int(a) for a in sys.argv[2:5])
        measure(fetches, mib, pings, sys.argv[5:], sys.argv[1] == "client")
