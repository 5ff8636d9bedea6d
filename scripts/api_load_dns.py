#!/usr/bin/env python3
"""ward's DNS CPU per cache hit with and without dashboards watching.

One ward (release) forwards DNS on 127.0.0.13:53 to knot (127.0.0.10, as
bench_dns.py) and relays UDP from a forward inbound to a sink that never
answers; 10,000 client sockets each open a flow (idle timeout 15 min, so
all stay live). Then, interleaved, ROUNDS rounds of two runs each (the
order alternating): dnsperf at 50k QPS of cache hits for SECS s with no
API client, and the same with 50 WebSocket clients on the API (25 on
/traffic, 25 on /connections, each /connections message a snapshot of the
10,000 flows). ward runs on CPU 1, dnsperf and the clients (one thread
that reads and discards) on CPU 0.

CPU is read per thread from /proc: `ward-api` is the API's thread; the
rest (the runtime's workers, the main thread) is the data path, and its
time per answered query is "DNS CPU per cache hit". The process's whole
time per query is printed too. Run it through scripts/bench-dns.sh:

    scripts/bench-dns.sh --api-load
"""
import base64
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.argv = [sys.argv[0]]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_dns as b  # noqa: E402

ROUNDS = 6
SECS = 8
FLOWS = 10_000
CLIENTS = {"/traffic": 25, "/connections": 25}
WARD = "127.0.0.13"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ward(api_port, inbound_port, sink):
    with open(f"{b.LAB}/ward.ron", "w") as f:
        f.write(f"""(
 admin: (socket: "{b.LAB}/ward.sock"),
 log: (level: "warn"),
 api: (listen: "127.0.0.1:{api_port}"),
 dns: (
  listen: ["{WARD}:53"],
  upstreams: {{ "knot": (url: "udp://127.0.0.10:53") }},
  default: ["knot"],
  cache: (size: 100000),
 ),
 udp: (
  inbounds: [ Forward((listen: "{WARD}:{inbound_port}", to: "{sink}")) ],
  default: "direct",
  max_endpoints: 12000,
  idle: (dns_s: 17, quic_s: 120, other_s: 900),
 ),
)
""")
    b.SERVERS.clear()
    b.SERVERS["ward"] = WARD
    b.PIDS["ward"] = b.start(f"taskset -c 1 {b.WARD} run --config {b.LAB}/ward.ron", "ward").pid


def open_flows(inbound):
    """FLOWS sockets, each one datagram to the inbound: a flow each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, FLOWS + 1000), max(hard, FLOWS + 1000)))
    sockets = []
    for i in range(FLOWS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.sendto(b"flow %d" % i, inbound)
        sockets.append(s)
        if i % 500 == 499:
            time.sleep(0.05)  # within the inbound's queue and the budget
    return sockets


def live_flows(api_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/connections", timeout=30) as r:
        return len(json.load(r)["connections"])


def websocket(api_port, path):
    s = socket.create_connection(("127.0.0.1", api_port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: ward\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError(f"{path}: closed during the handshake")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise OSError(f"{path}: {status!r}")
    s.setblocking(False)
    return s


class Watchers:
    """The 50 WebSocket clients: one thread reads every socket and drops
    what it reads (frames are not parsed: only the bytes are counted)."""

    def __init__(self, api_port):
        self.sockets = [websocket(api_port, p) for p, n in CLIENTS.items() for _ in range(n)]
        self.received = 0
        self.closed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.drain)
        self.thread.start()

    def drain(self):
        sel = selectors.DefaultSelector()
        for s in self.sockets:
            sel.register(s, selectors.EVENT_READ)
        buf = bytearray(1 << 20)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                try:
                    n = key.fileobj.recv_into(buf)
                except BlockingIOError:
                    continue
                if n == 0:
                    sel.unregister(key.fileobj)
                    self.closed += 1
                self.received += n

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.sockets:
            s.close()


def thread_ticks(pid):
    """CPU ticks of the API's thread and of every other thread."""
    api = rest = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        if comm == "ward-api":
            api += ticks
        else:
            rest += ticks
    return api, rest


def measure(pid, label, watchers=None):
    before = thread_ticks(pid)
    got_before = watchers.received if watchers else 0
    r = b.dnsperf("ward", f"{b.LAB}/hot.txt", SECS, 50_000)
    after = thread_ticks(pid)
    answered = max(r["qps"] * SECS, 1)
    api, rest = ((a - c) / b.CLK_TCK for a, c in zip(after, before))
    r.update(label=label, dns_us=rest * 1e6 / answered, all_us=(api + rest) * 1e6 / answered,
             api_cpu=api / SECS, ws_mb_s=((watchers.received - got_before) / SECS / 1e6) if watchers else 0)
    print(f"  {label:9} dns {r['dns_us']:.2f} µs/q, all {r['all_us']:.2f} µs/q, api thread "
          f"{r['api_cpu'] * 100:.1f}% CPU, {r['qps']:,.0f} q/s, {r['latency_ms']:.3f} ms, "
          f"clients read {r['ws_mb_s']:.1f} MB/s", flush=True)
    return r


def main():
    b.write_zone()
    b.check_free()
    b.start_knot()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    api_port, inbound_port = free_port(), free_port()
    start_ward(api_port, inbound_port, f"127.0.0.1:{sink.getsockname()[1]}")
    b.wait_answering()
    pid = b.PIDS["ward"]
    b.dnsperf("ward", f"{b.LAB}/hot.txt", 2)
    alone = measure(pid, "no flows")
    flows = open_flows((WARD, inbound_port))
    time.sleep(2)
    live = live_flows(api_port)
    print(f"{live} live flows", flush=True)
    runs = {"quiet": [], "watched": []}
    closed = 0
    for i in range(ROUNDS):
        for label in (("quiet", "watched") if i % 2 == 0 else ("watched", "quiet")):
            if label == "quiet":
                runs[label].append(measure(pid, label))
                continue
            watchers = Watchers(api_port)
            time.sleep(2)
            runs[label].append(measure(pid, label, watchers))
            closed += watchers.closed
            watchers.close()
    live_after = live_flows(api_port)
    rss = b.rss_kib(pid)
    report(alone, runs, live, live_after, closed, rss)
    for s in flows:
        s.close()


def report(alone, runs, live, live_after, closed, rss):
    med = lambda label, key: statistics.median(r[key] for r in runs[label])
    q, w = (lambda key: med("quiet", key)), (lambda key: med("watched", key))
    cpu = b.sh("lscpu | sed -n 's/^Model name: *//p'").strip()
    lines = [
        f"Produced by `scripts/bench-dns.sh --api-load` on {time.strftime('%Y-%m-%d')} ({cpu}, {os.cpu_count()} CPUs):",
        f"{live:,} live UDP flows ({live_after:,} at the end), cache hits at 50k QPS for {SECS} s, {ROUNDS} rounds,",
        "interleaved (order alternating), medians. *Watched*: 50 WebSocket clients (25 `/traffic`, 25",
        "`/connections`, 1 s interval) reading everything. DNS CPU is every thread but `ward-api`.", "",
        "| | quiet | watched | watched / quiet |", "|---|---|---|---|",
        f"| DNS CPU µs / cache hit | {q('dns_us'):.2f} | {w('dns_us'):.2f} | {w('dns_us') / q('dns_us'):.3f} |",
        f"| whole process CPU µs / cache hit | {q('all_us'):.2f} | {w('all_us'):.2f} | {w('all_us') / q('all_us'):.3f} |",
        f"| API thread CPU | {q('api_cpu') * 100:.1f}% | {w('api_cpu') * 100:.1f}% | |",
        f"| answered QPS | {q('qps'):,.0f} | {w('qps'):,.0f} | |",
        f"| latency ms | {q('latency_ms'):.3f} | {w('latency_ms'):.3f} | {w('latency_ms') / q('latency_ms'):.2f} |",
        f"| bytes the clients read, MB/s | 0 | {w('ws_mb_s'):.1f} | |", "",
        f"Before the flows were opened: DNS {alone['dns_us']:.2f} µs / hit, whole process {alone['all_us']:.2f}.",
        f"WebSocket clients the API closed: {closed}. ward's RSS at the end: {rss / 1024:.1f} MiB.", "",
        "Raw runs, DNS CPU µs / hit:", "",
        "- quiet: " + ", ".join(f"{r['dns_us']:.2f}" for r in runs["quiet"]),
        "- watched: " + ", ".join(f"{r['dns_us']:.2f}" for r in runs["watched"]), "",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    path = os.path.join(b.ROOT, "docs/benchmarks.md")
    previous = open(path).read()
    start, end = "<!-- api-load -->", "<!-- /api-load -->"
    if start in previous:
        head, _, rest = previous.partition(start)
        previous = head + start + "\n" + text + end + rest.partition(end)[2]
    else:
        previous += "\n## DNS under dashboards: the API's load\n\n" + start + "\n" + text + end + "\n"
    open(path, "w").write(previous)


if __name__ == "__main__":
    try:
        main()
    finally:
        b.stop_all()
