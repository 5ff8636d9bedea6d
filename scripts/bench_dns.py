#!/usr/bin/env python3
"""ward's DNS forwarder beside dnsmasq and unbound, side by side in one run.

knot (127.0.0.10) is the authoritative upstream of all three forwarders:
dnsmasq (.11), unbound (.12, two threads) and ward (.13). The servers are
pinned to CPU 1 and dnsperf to CPU 0, so CPU time per answered query ranks
the servers (dnsperf itself tops out long before they do on this box). Each
measurement is repeated, interleaved across servers, and the median is kept:
these machines are noisy. Results go to docs/benchmarks.md.
"""
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

QUICK = "--quick" in sys.argv
REPEAT = 3 if QUICK else 5
SECS = 5 if QUICK else 8
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARD = os.path.join(ROOT, "target/release/ward")
LAB = tempfile.mkdtemp(prefix="ward-bench-")
SERVERS = {"dnsmasq": "127.0.0.11", "unbound": "127.0.0.12", "ward": "127.0.0.13"}
procs = []
PIDS = {}


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def write_zone():
    with open(f"{LAB}/bench.test.zone", "w") as z:
        z.write("$ORIGIN bench.test.\n$TTL 3600\n@ IN SOA ns admin 1 3600 600 86400 300\n@ IN NS ns\nns IN A 127.0.0.10\n")
        for i in range(10000):
            z.write(f"h{i} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
        z.write("*.fwd IN A 10.200.0.1\n")
    with open(f"{LAB}/hot.txt", "w") as q:
        q.writelines(f"h{i}.bench.test A\n" for i in range(100))


def start(cmd, name):
    # exec: the pid is the server's, not a shell's; its own session, so the
    # whole group can be stopped at the end.
    p = subprocess.Popen("exec " + cmd, shell=True, stdout=subprocess.DEVNULL,
                         stderr=open(f"{LAB}/{name}.log", "w"), start_new_session=True)
    procs.append(p)
    return p


def start_knot():
    os.makedirs(f"{LAB}/knot", exist_ok=True)
    with open(f"{LAB}/knot.conf", "w") as f:
        f.write(f"server:\n  listen: 127.0.0.10@53\n  rundir: {LAB}/knot\n  udp-workers: 1\n  tcp-workers: 1\n"
                f"  background-workers: 1\ndatabase:\n  storage: {LAB}/knot\nzone:\n  - domain: bench.test\n"
                f"    file: {LAB}/bench.test.zone\n    journal-content: none\nlog:\n  - target: stderr\n    any: error\n")
    start(f"knotd -c {LAB}/knot.conf", "knot")


def start_ward(binary, name):
    """A ward build forwarding to knot on SERVERS[name], its admin socket
    at {LAB}/{name}.sock."""
    with open(f"{LAB}/{name}.ron", "w") as f:
        f.write(f"(\n admin: (socket: \"{LAB}/{name}.sock\"),\n log: (level: \"warn\"),\n dns: (\n"
                f"  listen: [\"{SERVERS[name]}:53\"],\n  upstreams: {{ \"knot\": (url: \"udp://127.0.0.10:53\") }},\n"
                f"  default: [\"knot\"],\n  limits: (in_flight: 8192),\n  cache: (size: 100000),\n ),\n)\n")
    # Started on CPU 1, ward sizes its runtime to the one CPU it may use.
    PIDS[name] = start(f"taskset -c 1 {binary} run --config {LAB}/{name}.ron", name).pid


def check_free():
    taken = sh("ss -Hlnu '( sport = :53 )' || true")
    for addr in ["127.0.0.10", *SERVERS.values()]:
        if f"{addr}:53 " in taken:
            sys.exit(f"{addr}:53 is already in use (a server left from an earlier run?)")


def wait_answering():
    """Until knot and every server answer; then every process on CPU 1."""
    deadline = time.time() + 15
    for addr in ["127.0.0.10", *SERVERS.values()]:
        while sh(f"kdig +short +timeout=1 +retry=0 @{addr} h1.bench.test A || true").strip() != "10.0.0.1":
            if time.time() > deadline:
                sys.exit(f"{addr} does not answer; see {LAB}/*.log")
            time.sleep(0.2)
    for p in procs:
        sh(f"taskset -a -p -c 1 {p.pid}")


def start_servers():
    check_free()
    start_knot()
    PIDS["dnsmasq"] = start(f"dnsmasq -k --listen-address=127.0.0.11 --port=53 --bind-interfaces --no-resolv "
                            f"--no-hosts --server=127.0.0.10 --cache-size=100000 --dns-forward-max=5000",
                            "dnsmasq").pid
    with open(f"{LAB}/unbound.conf", "w") as f:
        f.write(f"server:\n  interface: 127.0.0.12\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n"
                f"  pidfile: \"\"\n  num-threads: 2\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n"
                f"  msg-cache-size: 64m\n  rrset-cache-size: 128m\n  so-reuseport: yes\n  verbosity: 0\n  use-syslog: no\n"
                f"  module-config: \"iterator\"\n  domain-insecure: \"bench.test\"\n  local-zone: \"test.\" nodefault\n"
                f"forward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.10@53\n")
    PIDS["unbound"] = start(f"unbound -d -c {LAB}/unbound.conf", "unbound").pid
    start_ward(WARD, "ward")
    wait_answering()


def pid_of(server):
    return PIDS[server]


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def dnsperf(server, queries, secs, rate=None, clients=4):
    limit = f"-Q {rate}" if rate else ""
    out = sh(f"taskset -c 0 dnsperf -s {SERVERS[server]} -d {queries} -l {secs} -c {clients} -T 1 -q 500 {limit} 2>&1 || true")
    pick = lambda pattern: float((re.search(pattern, out) or [0, 0])[1])
    return {"qps": pick(r"Queries per second:\s+([\d.]+)"), "lost": pick(r"Queries lost:\s+\d+ \(([\d.]+)%\)"),
            "latency_ms": pick(r"Average Latency \(s\):\s+([\d.]+)") * 1000}


def cpu_per_query(server, queries, rate, secs=SECS):
    pid = pid_of(server)
    before = cpu_ticks(pid)
    result = dnsperf(server, queries, secs, rate)
    used = (cpu_ticks(pid) - before) / CLK_TCK
    result["cpu_us"] = used * 1e6 / max(result["qps"] * secs, 1)
    return result


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def interleaved(measure, servers=SERVERS):
    runs = {s: [] for s in servers}
    for _ in range(REPEAT):
        for s in servers:
            runs[s].append(measure(s))
    return runs


def miss_files():
    """`write(server, count)`: a query file of `count` names nobody asked
    `server` before (under the wildcard), so every one is a miss."""
    asked = {}

    def write(server, count):
        start = asked.get(server, 0)
        asked[server] = start + count
        path = f"{LAB}/miss-{server}.txt"
        with open(path, "w") as q:
            q.writelines(f"m{start + i}.{server}.fwd.bench.test A\n" for i in range(count))
        return path
    return write


def stop_all():
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def ward_stats():
    return sh(f"{WARD} ctl --socket {LAB}/ward.sock stats")


def main():
    write_zone()
    start_servers()
    for s in SERVERS:
        dnsperf(s, f"{LAB}/hot.txt", 2)
    results = {}
    results["hit_max"] = interleaved(lambda s: dnsperf(s, f"{LAB}/hot.txt", SECS))
    results["hit_50k"] = interleaved(lambda s: cpu_per_query(s, f"{LAB}/hot.txt", 50_000))
    miss_file = miss_files()
    results["miss_10k"] = interleaved(lambda s: cpu_per_query(s, miss_file(s, 10_000 * SECS), 10_000))
    # The highest rate forwarded without loss, step by step.
    results["miss_zero_loss"] = {}
    for s in SERVERS:
        best = 0
        for rate in (10_000, 20_000, 30_000, 40_000, 60_000, 80_000):
            r = dnsperf(s, miss_file(s, rate * 4), 4, rate)
            if r["lost"] > 0 or r["qps"] < rate * 0.95:
                break
            best = rate
        results["miss_zero_loss"][s] = best
    # By now each forwarder has been asked over a million distinct names:
    # its cache is full and every miss evicts.
    results["miss_full"] = interleaved(lambda s: cpu_per_query(s, miss_file(s, 10_000 * SECS), 10_000))
    # Overload: misses as fast as dnsperf sends them, then the 10k miss run again.
    results["after_overload"] = {}
    for s in SERVERS:
        dnsperf(s, miss_file(s, 400_000), 5, None, clients=20)
        results["after_overload"][s] = cpu_per_query(s, miss_file(s, 10_000 * SECS), 10_000)
    results["rss_kib"] = {s: rss_kib(pid_of(s)) for s in SERVERS}
    results["ward_stats"] = ward_stats()
    write_report(results)


def write_report(r):
    cmd = "scripts/bench-dns.sh" + (" --quick" if QUICK else "")
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'").strip()
    lines = [
        "# Benchmarks", "",
        f"Produced by `{cmd}` on {time.strftime('%Y-%m-%d')} ({cpu}, {os.cpu_count()} CPUs). knot on 127.0.0.10 is the",
        "authoritative upstream of every forwarder; servers run on CPU 1, dnsperf (1 thread, 4 clients) on CPU 0.",
        f"Each figure is the median of {REPEAT} runs of {SECS} s, interleaved across servers. CPU per query is the",
        "server's user+system time divided by the queries it answered: on loopback that includes the kernel's",
        "delivery of every answer to dnsperf, which no server can avoid.", "",
        "| | dnsmasq | unbound | ward | ward / unbound | ward / dnsmasq |", "|---|---|---|---|---|---|",
    ]

    def row(label, values, fmt, lower_is_better=True):
        d, u, w = (values["dnsmasq"], values["unbound"], values["ward"])
        ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
        lines.append(f"| {label} | {fmt.format(d)} | {fmt.format(u)} | {fmt.format(w)} | {ratio(w, u)} | {ratio(w, d)} |")

    med = lambda key, field: {s: median(r[key][s], field) for s in SERVERS}
    row("cache hits, max QPS (client-bound)", med("hit_max", "qps"), "{:,.0f}")
    row("cache hits at 50k QPS: CPU µs / query", med("hit_50k", "cpu_us"), "{:.2f}")
    row("cache hits at 50k QPS: latency ms", med("hit_50k", "latency_ms"), "{:.3f}")
    row("misses at 10k QPS (cache filling): CPU µs / query", med("miss_10k", "cpu_us"), "{:.2f}")
    row("misses at 10k QPS: loss %", med("miss_10k", "lost"), "{:.2f}")
    row("misses at 10k QPS: latency ms", med("miss_10k", "latency_ms"), "{:.3f}")
    row("misses: highest rate without loss (QPS, steps of 10-20k)", r["miss_zero_loss"], "{:,}")
    row("misses at 10k QPS, cache full and churning: CPU µs / query", med("miss_full", "cpu_us"), "{:.2f}")
    row("... loss %", med("miss_full", "lost"), "{:.2f}")
    after = r["after_overload"]
    row("misses at 10k QPS right after a 5 s overload: QPS", {s: after[s]["qps"] for s in SERVERS}, "{:,.0f}")
    row("... loss %", {s: after[s]["lost"] for s in SERVERS}, "{:.2f}")
    row("... CPU µs / query", {s: after[s]["cpu_us"] for s in SERVERS}, "{:.2f}")
    row("RSS at the end, MiB", {s: r["rss_kib"][s] / 1024 for s in SERVERS}, "{:.1f}")
    lines += ["", "ward's own figures at the end of the run (`ward ctl stats`):", "", "```", r["ward_stats"].rstrip(), "```", ""]
    for key, label in (("hit_50k", "cache hits at 50k QPS"), ("miss_10k", "misses at 10k QPS (cache filling)"),
                       ("miss_full", "misses at 10k QPS, cache full")):
        lines += [f"Raw runs, CPU µs / query (loss %), {label}:", ""]
        for s in SERVERS:
            lines.append(f"- {s}: " + ", ".join(f"{x['cpu_us']:.2f} ({x['lost']:.1f})" for x in r[key][s]))
        lines.append("")
    report = "\n".join(lines) + "\n"
    path = os.path.join(ROOT, "docs/benchmarks.md")
    previous = open(path).read() if os.path.exists(path) else ""
    marker = "<!-- dns-bench -->"
    head, _, tail = previous.partition(marker)
    tail = tail.partition("<!-- /dns-bench -->")[2]
    with open(path, "w") as f:
        f.write((head if previous and marker in previous else "") + marker + "\n" + report + "<!-- /dns-bench -->" + tail)
    print(report)


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
