#!/usr/bin/env python3
"""Two builds of ward side by side: this tree's (127.0.0.13) and a base
revision's (127.0.0.14), both forwarding to the same knot, pinned to CPU 1
with dnsperf on CPU 0 (as bench_dns.py does). CPU per answered query for
cache hits at 50k QPS and misses at 10k QPS, interleaved, median of 7 runs:
what a change costs, on a machine too noisy for comparisons across runs.
Run it through scripts/bench-dns.sh, which builds both (needs root):

    scripts/bench-dns.sh --base REV
"""
import os
import statistics
import sys

BASE, REV = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0]]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_dns as b  # noqa: E402

b.REPEAT = 7
b.SERVERS.clear()
b.SERVERS.update({"base": "127.0.0.14", "ward": "127.0.0.13"})


def main():
    b.write_zone()
    b.check_free()
    b.start_knot()
    b.start_ward(BASE, "base")
    b.start_ward(b.WARD, "ward")
    b.wait_answering()
    for s in b.SERVERS:
        b.dnsperf(s, f"{b.LAB}/hot.txt", 2)
    miss_file = b.miss_files()
    runs = {
        "cache hits at 50k QPS": b.interleaved(lambda s: b.cpu_per_query(s, f"{b.LAB}/hot.txt", 50_000)),
        "misses at 10k QPS": b.interleaved(lambda s: b.cpu_per_query(s, miss_file(s, 10_000 * b.SECS), 10_000)),
    }
    print(f"| | base ({REV}) | this tree | this / base |")
    print("|---|---|---|---|")
    for label, by_server in runs.items():
        for key, name, fmt in (("cpu_us", "CPU µs / query", "{:.2f}"), ("latency_ms", "latency ms", "{:.3f}"),
                               ("lost", "loss %", "{:.2f}")):
            base, this = (statistics.median(r[key] for r in by_server[s]) for s in ("base", "ward"))
            ratio = f"{this / base:.2f}" if base else "-"
            print(f"| {label}: {name} | {fmt.format(base)} | {fmt.format(this)} | {ratio} |")
    print()
    for label, by_server in runs.items():
        print(f"Raw runs, CPU µs / query, {label}:")
        for s in ("base", "ward"):
            print(f"- {s}: " + ", ".join(f"{r['cpu_us']:.2f}" for r in by_server[s]))


if __name__ == "__main__":
    try:
        main()
    finally:
        b.stop_all()
