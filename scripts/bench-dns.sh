#!/usr/bin/env bash
# Measures ward's DNS forwarder beside dnsmasq and unbound, all forwarding to
# the same knot on loopback, and writes docs/benchmarks.md. Needs root (it
# binds port 53 on 127.0.0.10-13 and installs dnsperf, knot, unbound,
# dnsmasq-base when missing). Takes about ten minutes.
#   scripts/bench-dns.sh [--quick | --syscalls | --base REV | --profiles | --api-load]
# With --syscalls it instead counts system calls and context switches per
# query with perf (scripts/syscalls_dns.py, about two minutes). With
# --base REV it instead runs this tree's ward beside REV's, built from
# `git archive` under target/bench-base (scripts/ab_dns.py, about five
# minutes plus the build). With --profiles it instead runs the release
# build beside the shipping profile's (profile.ship) and the shipping
# profile at opt-level 3 (target/ship-o3), and prints their sizes
# (scripts/profiles_dns.py, about six minutes plus two LTO builds of
# four to five minutes each). With --api-load it instead measures ward's
# DNS CPU per cache hit with 10,000 live UDP flows, without and with 50
# WebSocket clients on the API (scripts/api_load_dns.py, about five
# minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
pkgs=(dnsperf knot knot-dnsutils unbound dnsmasq-base)
[ "${1:-}" = --syscalls ] && pkgs+=(linux-perf)
scripts/ensure-packages.sh "${pkgs[@]}"
cargo build --release --locked
[ "${1:-}" = --syscalls ] && exec python3 scripts/syscalls_dns.py
[ "${1:-}" = --api-load ] && exec python3 scripts/api_load_dns.py
if [ "${1:-}" = --profiles ]; then
    cargo build --profile ship --locked
    CARGO_PROFILE_SHIP_OPT_LEVEL=3 CARGO_TARGET_DIR=target/ship-o3 cargo build --profile ship --locked
    exec python3 scripts/profiles_dns.py
fi
if [ "${1:-}" = --base ]; then
    rev=${2:?--base needs a revision}
    base=target/bench-base
    rm -rf "$base/src" && mkdir -p "$base/src"
    git archive "$rev" | tar -x -C "$base/src"
    (cd "$base/src" && CARGO_TARGET_DIR=../target cargo build --release --locked)
    exec python3 scripts/ab_dns.py "$base/target/release/ward" "$(git rev-parse --short "$rev")"
fi
exec python3 scripts/bench_dns.py "$@"
