#!/usr/bin/env python3
"""Builds of one tree side by side: the release profile, the shipping
profile (profile.ship: opt-level "s", fat LTO, one codegen unit, stripped)
and the shipping profile at opt-level 3 ("ship-o3"). Each forwards to the
same knot on its own address (127.0.0.13-15), pinned to CPU 1 with
dnsperf on CPU 0 (as bench_dns.py does). Prints each binary's size, stripped and as built, and
CPU per answered query for cache hits at 50k QPS and misses at 10k QPS,
interleaved (each round in another order), median of 7 runs. Run it
through scripts/bench-dns.sh, which builds the three (needs root):

    scripts/bench-dns.sh --profiles
"""
import os
import statistics
import subprocess
import sys
import tempfile

sys.argv = [sys.argv[0]]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_dns as b  # noqa: E402

BUILDS = {
    "release": os.path.join(b.ROOT, "target/release/ward"),
    "ship": os.path.join(b.ROOT, "target/ship/ward"),
    "ship-o3": os.path.join(b.ROOT, "target/ship-o3/ship/ward"),
}
b.REPEAT = 7
b.SERVERS.clear()
b.SERVERS.update(zip(BUILDS, ("127.0.0.13", "127.0.0.14", "127.0.0.15")))


def stripped_size(path):
    with tempfile.NamedTemporaryFile() as out:
        subprocess.run(["strip", "-o", out.name, path], check=True)
        return os.path.getsize(out.name)


def rotated(measure):
    """bench_dns.interleaved, but each round starts with the next build, so
    that no build always runs first (or right after the same one)."""
    runs = {s: [] for s in b.SERVERS}
    order = list(b.SERVERS)
    for i in range(b.REPEAT):
        for s in order[i % len(order):] + order[:i % len(order)]:
            runs[s].append(measure(s))
    return runs


def main():
    b.write_zone()
    b.check_free()
    b.start_knot()
    for name, binary in BUILDS.items():
        b.start_ward(binary, name)
    b.wait_answering()
    for s in b.SERVERS:
        b.dnsperf(s, f"{b.LAB}/hot.txt", 2)
    miss_file = b.miss_files()
    runs = {
        "cache hits at 50k QPS": rotated(lambda s: b.cpu_per_query(s, f"{b.LAB}/hot.txt", 50_000)),
        "misses at 10k QPS": rotated(lambda s: b.cpu_per_query(s, miss_file(s, 10_000 * b.SECS), 10_000)),
    }
    names = list(BUILDS)
    print("| | " + " | ".join(names) + " | " + " | ".join(f"{n} / release" for n in names[1:]) + " |")
    print("|---" * (2 * len(names)) + "|")
    mib = lambda n: n / 1048576
    sizes = {n: os.path.getsize(p) for n, p in BUILDS.items()}
    stripped = {n: stripped_size(p) for n, p in BUILDS.items()}
    for label, values, fmt in (("binary as built, MiB", sizes, "{:.2f}"), ("binary stripped, MiB", stripped, "{:.2f}")):
        ratios = [f"{values[n] / values['release']:.2f}" for n in names[1:]]
        print(f"| {label} | " + " | ".join(fmt.format(mib(values[n])) for n in names) + " | " + " | ".join(ratios) + " |")
    for label, by_server in runs.items():
        for key, name, fmt in (("cpu_us", "CPU µs / query", "{:.2f}"), ("latency_ms", "latency ms", "{:.3f}"),
                               ("lost", "loss %", "{:.2f}")):
            med = {n: statistics.median(r[key] for r in by_server[n]) for n in names}
            ratios = [f"{med[n] / med['release']:.2f}" if med["release"] else "-" for n in names[1:]]
            print(f"| {label}: {name} | " + " | ".join(fmt.format(med[n]) for n in names) + " | "
                  + " | ".join(ratios) + " |")
    print()
    for label, by_server in runs.items():
        print(f"Raw runs, CPU µs / query (latency ms), {label}:")
        print()
        for n in names:
            print(f"- {n}: " + ", ".join(f"{r['cpu_us']:.2f} ({r['latency_ms']:.3f})" for r in by_server[n]))
        print()


if __name__ == "__main__":
    try:
        main()
    finally:
        b.stop_all()
