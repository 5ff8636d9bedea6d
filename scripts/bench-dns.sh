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
missing=()
pkgs=(dnsperf knot knot-dnsutils unbound dnsmasq-base)
[ "${1:-}" = --syscalls ] && pkgs+=(linux-perf)
for pkg in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        || { DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
cargo build --release --locked
[ "${1:-}" = --syscalls ] && exec python3 scripts/syscalls_dns.py
exec python3 scripts/bench_dns.py "$@"
