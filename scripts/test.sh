#!/usr/bin/env bash
# Runs every check and test of ward: formatting, clippy, unit and integration
# tests against the real binary and real peers. Installs the Debian packages
# the tests need (as root, or through sudo when that works without a
# password). Tests that need root skip themselves when run as a normal user.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: setpriv (util-linux) to run ward as an
# unprivileged user; knot as the authoritative upstream and kdig as the
# client; unbound as a DNS-over-TLS/HTTPS upstream; ss (iproute2) to destroy
# sockets from outside; dante-server as a real SOCKS5 node; nftables for the
# TPROXY rules of the router test.
PACKAGES=(util-linux knot knot-dnsutils unbound iproute2 dante-server nftables)

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing ${missing[*]}"
    # Keep package scripts from starting services; the tests start their own.
    local policy=/usr/sbin/policy-rc.d
    if as_root sh -c "[ ! -e $policy ] && printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"; then
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update \
            && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
            || echo "warning: could not install ${missing[*]}; tests that need them will skip"
    fi
}

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

install_packages

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

# The failover tests through SOCKS5 nodes (DNS through dialers, the UDP
# relay's Forward and SOCKS5 inbounds) need no root: run them again as
# nobody (ward, danted, knot and the test all unprivileged) when this run
# is root and nobody can reach the build.
if [ "$(id -u)" -eq 0 ]; then
    nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp)
    for test in dialers udp_relay; do
        echo "== $test as an unprivileged user"
        # The test binary itself, not the ward binary it depends on.
        bin=$(cargo test --locked --test "$test" --no-run --message-format=json 2>/dev/null \
            | grep '"kind":\["test"\]' \
            | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)
        if [ -n "$bin" ] && "${nobody[@]}" test -x "$bin"; then
            (cd /tmp && "${nobody[@]}" "$bin")
        else
            echo "skipped: user nobody cannot reach ${bin:-the $test test binary}"
        fi
    done
fi
echo "== all tests passed"
