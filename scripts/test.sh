#!/usr/bin/env bash
# Runs every check and test of ward: formatting, clippy, unit and integration
# tests against the real binary and real peers. Installs the Debian packages
# the tests need (as root, or through sudo when that works without a
# password). No test passes by skipping: a test that cannot run here (a
# tool missing, or root) fails when run as root, and otherwise records the
# skip in $WARD_SKIP_LOG (tests/support/skip.rs); ignored tests count as
# skipped too. Any skip fails this script unless WARD_ALLOW_SKIPS=1, which
# still prints them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: setpriv (util-linux) to run ward as an
# unprivileged user; knot as the authoritative upstream and kdig as the
# client; unbound as a DNS-over-TLS/HTTPS upstream; ss (iproute2) to destroy
# sockets from outside, and ip for the router test's network namespaces;
# dante-server as a real SOCKS5 node; nftables for the TPROXY rules of the
# router test and procps for its sysctl; prlimit (util-linux) to lower
# ward's descriptor limit; dnsperf as the load while a listener is killed;
# shadowsocks-libev (ss-server) as a Shadowsocks node of the classic AEAD
# methods and trojan as a Trojan node, for the dialers of those protocols;
# v2ray as an independent client that proves those nodes work without ward;
# systemd for systemd-analyze and systemd-sysusers, which check the unit and
# user files of scripts/package/.
# chromium, chromium-driver, python3-selenium: tests/browser.rs drives the
# web page in headless Chromium (its script runs on Debian's /usr/bin/python3).
# python3 for the soak's UDP load (scripts/soak_udp.py); dpkg-dev and
# binutils for cargo-deb (dpkg-shlibdeps, strip) and the package test.
PACKAGES=(util-linux knot knot-dnsutils unbound iproute2 dante-server nftables procps dnsperf
    shadowsocks-libev trojan v2ray systemd chromium chromium-driver python3-selenium python3 dpkg-dev binutils)

# shadowsocks-rust: ssserver, the Shadowsocks node of the 2022 methods
# (ss-server has none), and sslocal, the client that proves it. Not in
# Debian; built with cargo (about 15 minutes on two cores, once).
SHADOWSOCKS_RUST=1.25.0
# cargo-deb builds the Debian package (scripts/package.sh); about a minute
# to install, once.
CARGO_DEB=3.8.0

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
        remove_policy=1
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update \
            && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
            || echo "warning: could not install ${missing[*]}; tests that need them will not run"
    fi
}

remove_policy=0
skip_log=$(mktemp)
test_out=$(mktemp)
cleanup() {
    rm -f "$skip_log" "$test_out"
    if [ "$remove_policy" -eq 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT
# The run as nobody below records its skips here too (root writes anyway).
if [ "$(id -u)" -eq 0 ]; then chown 65534 "$skip_log"; fi
export WARD_SKIP_LOG=$skip_log

# Adds every test libtest reported as ignored in the output file $1 to the
# skip log; `$2` names the test binary when the output does not (a test
# binary run directly). Ignored tests that the result lines count but no
# line names are added as one entry, so none goes uncounted.
record_ignored() {
    awk -v bin="${2:-?}" -v out="$skip_log" '
        /^ *Running / { bin = ($2 == "unittests") ? $3 : $2 }
        /^ *Doc-tests / { bin = "doc-tests " $2 }
        /^test .* \.\.\. ignored/ {
            line = $0; sub(/^test /, "", line)
            reason = line; sub(/ \.\.\. ignored,? ?/, "\t", reason); sub(/^[^\t]*\t/, "", reason)
            sub(/ \.\.\. ignored.*/, "", line)
            print bin "/" line "\tignored" (reason == "" ? "" : ": " reason) >> out
            named++
        }
        /^test result:/ {
            for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^ignored/) counted += $i
        }
        END {
            if (counted > named) print "?\t" counted - named " more ignored tests (see the test result lines)" >> out
        }' "$1"
}

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

install_shadowsocks_rust() {
    command -v ssserver >/dev/null && command -v sslocal >/dev/null && return 0
    echo "== installing shadowsocks-rust $SHADOWSOCKS_RUST (ssserver, sslocal)"
    cargo install --locked --version "$SHADOWSOCKS_RUST" shadowsocks-rust \
        || echo "warning: could not install shadowsocks-rust; tests that need it will not run"
}

install_cargo_deb() {
    command -v cargo-deb >/dev/null && return 0
    echo "== installing cargo-deb $CARGO_DEB"
    cargo install --locked --version "$CARGO_DEB" cargo-deb \
        || echo "warning: could not install cargo-deb; the package test will not run"
}

install_packages
install_shadowsocks_rust
install_cargo_deb


echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked 2>&1 | tee "$test_out"
record_ignored "$test_out"

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
            (cd /tmp && "${nobody[@]}" "$bin") 2>&1 | tee "$test_out"
            record_ignored "$test_out" "$test (as nobody)"
        else
            echo "skipped: user nobody cannot reach ${bin:-the $test test binary}"
            printf '%s (as nobody)\tuser nobody cannot reach %s\n' "$test" "${bin:-the test binary}" >> "$skip_log"
        fi
    done
fi

# The Debian package: built with the shipping profile (a fat-LTO build,
# 3.5 minutes from scratch on two cores), installed, checked and purged.
# Needs root.
if [ "$(id -u)" -eq 0 ] && command -v cargo-deb >/dev/null; then
    echo "== package"
    start=$SECONDS
    scripts/package.sh --test
    echo "== package: $((SECONDS - start)) s"
else
    echo "skipped: the package test needs root and cargo-deb"
    printf 'package\tscripts/package.sh --test needs root and cargo-deb\n' >> "$skip_log"
fi

# A one-minute soak of the release build under load and chaos
# (scripts/soak.sh; about two and a half minutes with warm-up and settling).
soak_tools=(knotd kdig danted dnsperf python3)
missing_tools=()
for tool in "${soak_tools[@]}"; do command -v "$tool" >/dev/null || missing_tools+=("$tool"); done
if [ ${#missing_tools[@]} -eq 0 ]; then
    echo "== soak (1 minute)"
    start=$SECONDS
    scripts/soak.sh 1
    echo "== soak: $((SECONDS - start)) s"
else
    echo "skipped: the soak needs ${missing_tools[*]}"
    printf 'soak\tscripts/soak.sh needs %s\n' "${missing_tools[*]}" >> "$skip_log"
fi

skipped=$(wc -l < "$skip_log")
echo "== $skipped tests skipped"
if [ "$skipped" -gt 0 ]; then
    sed 's/^/   /' "$skip_log"
    if [ "${WARD_ALLOW_SKIPS:-0}" = 1 ]; then
        echo "== every test that ran passed (WARD_ALLOW_SKIPS=1: skips allowed)"
        exit 0
    fi
    echo "error: tests were skipped; run as root to install and use what they need, or set WARD_ALLOW_SKIPS=1" >&2
    exit 1
fi
echo "== all tests passed"
