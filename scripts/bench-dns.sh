#!/usr/bin/env bash
# Measures ward's DNS forwarder beside dnsmasq and unbound, all forwarding to
# the same knot on loopback, and writes docs/benchmarks.md. Needs root (it
# binds port 53 on 127.0.0.10-13 and installs dnsperf, knot, unbound,
# dnsmasq-base when missing). Takes about ten minutes.
#   scripts/bench-dns.sh [--quick]
# With --syscalls it instead counts system calls and context switches per
# query with perf (scripts/syscalls_dns.py, about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
pkgs=(dnsperf knot knot-dnsutils unbound dnsmasq-base)
[ "${1:-}" = --syscalls ] && pkgs+=(linux-perf)
scripts/ensure-packages.sh "${pkgs[@]}"
cargo build --release --locked
[ "${1:-}" = --syscalls ] && exec python3 scripts/syscalls_dns.py
exec python3 scripts/bench_dns.py "$@"
