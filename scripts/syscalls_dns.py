#!/usr/bin/env python3
"""System calls and context switches per answered query, ward beside dnsmasq
and unbound: the same servers, upstream and query files as bench_dns.py,
counted with `perf stat` on each server's process while dnsperf runs. Run it
through scripts/bench-dns.sh, which installs the servers and perf and builds
ward (needs root). Prints a markdown table; takes about two minutes.

    scripts/bench-dns.sh --syscalls
"""
import os
import statistics
import subprocess
import sys

sys.argv = [sys.argv[0], "--quick"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_dns as b  # noqa: E402

EVENTS = ["raw_syscalls:sys_enter", "context-switches"]
SECS = 5
REPEAT = 3


def counted(server, queries, rate):
    """One dnsperf run with perf counting on the server: per-query figures."""
    perf = subprocess.Popen(
        f"perf stat -x, -e {','.join(EVENTS)} -p {b.pid_of(server)} -- sleep {SECS}",
        shell=True, stderr=subprocess.PIPE, text=True)
    result = b.cpu_per_query(server, queries, rate, SECS)
    counts = {}
    for line in perf.communicate()[1].splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            counts[fields[2]] = float(fields[0])
    answered = max(result["qps"] * SECS, 1)
    return {"cpu_us": result["cpu_us"], **{e: counts.get(e, 0) / answered for e in EVENTS}}


def main():
    b.write_zone()
    b.start_servers()
    for s in b.SERVERS:
        b.dnsperf(s, f"{b.LAB}/hot.txt", 2)
    miss_file = b.miss_files()
    hits = b.interleaved(lambda s: counted(s, f"{b.LAB}/hot.txt", 50_000), b.SERVERS)
    miss = b.interleaved(lambda s: counted(s, miss_file(s, 10_000 * SECS), 10_000), b.SERVERS)
    print("| | " + " | ".join(b.SERVERS) + " |")
    print("|---|" + "---|" * len(b.SERVERS))
    for label, runs in (("cache hits at 50k QPS", hits), ("misses at 10k QPS", miss)):
        # CPU time is left out: tracing every system call inflates it.
        for key, name in ((EVENTS[0], "system calls"), (EVENTS[1], "context switches")):
            cells = [f"{statistics.median(r[key] for r in runs[s]):.2f}" for s in b.SERVERS]
            print(f"| {label}: {name} / query | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    try:
        main()
    finally:
        b.stop_all()
