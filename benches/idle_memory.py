#!/usr/bin/env python3
"""Idle client connections against a proxy, and what they cost it in memory.

Used by benches/idle_memory.sh (see there). One run against one proxy:

    idle_memory.py PORT PIDS COUNTS MODE

PORT: the proxy's listening port on 127.0.0.1. PIDS: comma-separated pids whose
VmRSS is summed (nginx: master and worker). COUNTS: comma-separated connection
counts, measured one after the other (e.g. 5000,10000). MODE: `request` (each
connection makes one keep-alive GET and reads its response, then stays open) or
`none` (connected, nothing sent).

For each count: RSS before, RSS with the connections open (after they settled),
KiB per connection, RSS once they are closed (polled until it stops falling, up
to 10 s). Prints one tab-separated line per count:
count, rss_before_kib, rss_open_kib, kib_per_conn, rss_after_close_kib.
"""

import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
# Seconds waited after the last connection opened, before RSS is read.
IDLE_GRACE = 2.5


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def read_response(s):
    """Reads one response with a Content-Length body (what the bench backends send)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:80]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed inside the response body")
        rest += chunk


def settle(pids, rounds=20, pause=0.1):
    """RSS once it stopped moving (or after `rounds` samples)."""
    last = rss_kib(pids)
    for _ in range(rounds):
        time.sleep(pause)
        now = rss_kib(pids)
        if abs(now - last) < 64:
            return now
        last = now
    return last


def one(port, pids, count, mode):
    before = settle(pids)
    conns = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(30)
        if mode == "request":
            s.sendall(REQUEST)
            read_response(s)
        conns.append(s)
    # fulcrum frees a connection's buffers after a second idle (nginx at once).
    time.sleep(IDLE_GRACE)
    opened = settle(pids)
    # Still open: every connection must be alive after the measurement.
    for s in conns[:: max(1, count // 50)]:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                raise RuntimeError("the proxy closed an idle connection")
        except BlockingIOError:
            pass
    for s in conns:
        s.close()
    conns.clear()
    deadline = time.time() + 10
    after = settle(pids)
    while time.time() < deadline:
        time.sleep(0.5)
        now = rss_kib(pids)
        if now >= after - 64:
            break
        after = now
    per = (opened - before) / count
    print(f"{count}\t{before}\t{opened}\t{per:.2f}\t{after}", flush=True)


def main():
    port = int(sys.argv[1])
    pids = [int(p) for p in sys.argv[2].split(",") if p]
    counts = [int(c) for c in sys.argv[3].split(",")]
    mode = sys.argv[4]
    for count in counts:
        one(port, pids, count, mode)


if __name__ == "__main__":
    main()
