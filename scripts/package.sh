#!/usr/bin/env bash
# Builds ward's Debian package with the shipping profile (cargo-deb; see
# [package.metadata.deb] in Cargo.toml and docs/operations.md):
#   scripts/package.sh          # prints the path of target/debian/ward_*.deb
#   scripts/package.sh --test   # then, as root: installs it, checks what it
#                               # installed, and purges it again
# The test refuses to run when a ward package is installed already (it
# would replace and then purge it). Package scripts are kept from starting
# services with a policy-rc.d that exits 101, as scripts/test.sh does; the
# package neither enables nor starts its unit anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

command -v cargo-deb >/dev/null || { echo "package: cargo-deb is missing: cargo install --locked cargo-deb" >&2; exit 2; }
deb=$(cargo deb --profile ship --locked --quiet | tail -n 1)
[ -f "$deb" ] || { echo "package: cargo deb made no package ($deb)" >&2; exit 1; }
echo "$deb"
[ "${1:-}" = --test ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "package: --test installs the package: run it as root" >&2
    exit 2
fi
if dpkg-query -W -f='${Status}' ward 2>/dev/null | grep -q 'ok installed\|config-files'; then
    echo "package: a ward package is installed already; not replacing it (dpkg --purge ward first)" >&2
    exit 1
fi

installed=0
remove_policy=0
policy=/usr/sbin/policy-rc.d
cleanup() {
    if [ "$installed" -eq 1 ]; then dpkg --purge ward >/dev/null 2>&1 || true; fi
    if [ "$remove_policy" -eq 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    remove_policy=1
fi

fail() {
    echo "package: FAILED: $*" >&2
    exit 1
}

installed=1
dpkg -i "$deb"
listed=$(dpkg -L ward)
# /lib is /usr/lib on Debian since bookworm: cargo-deb installs units in
# /usr/lib/systemd/system, where systemd reads them either way.
for path in /usr/bin/ward /etc/ward/ward.ron /usr/lib/systemd/system/ward.service \
    /usr/share/doc/ward/README.md /usr/share/doc/ward/copyright /usr/share/doc/ward/docs/configuration.md \
    /usr/share/doc/ward/docs/operations.md /usr/lib/sysusers.d/ward.conf; do
    grep -qx "$path" <<<"$listed" || fail "dpkg -L ward does not list $path"
    [ -e "$path" ] || fail "$path is listed but missing"
done
dpkg-query -W -f='${Conffiles}\n' ward | grep -q '^ /etc/ward/ward.ron ' || fail "/etc/ward/ward.ron is not a conffile"
/usr/bin/ward check --config /etc/ward/ward.ron || fail "ward check --config /etc/ward/ward.ron"
# The unit's user exists, and the configuration is readable by it alone.
if command -v systemd-sysusers >/dev/null; then
    getent passwd ward >/dev/null || fail "no user ward after installing"
    [ "$(stat -c %G:%a /etc/ward/ward.ron)" = "ward:640" ] || fail "/etc/ward/ward.ron is not ward:640"
fi
# Neither enabled nor started on install.
[ ! -e /etc/systemd/system/multi-user.target.wants/ward.service ] || fail "the unit was enabled on install"
for pid in $(pgrep -x ward || true); do
    [ "$(readlink "/proc/$pid/exe")" != /usr/bin/ward ] || fail "the package started ward (pid $pid)"
done
# Shipped without symbols (profile.ship strips them).
[ "$(nm /usr/bin/ward 2>&1)" = "nm: /usr/bin/ward: no symbols" ] || fail "/usr/bin/ward has a symbol table"

dpkg --purge ward
installed=0
dpkg-query -W -f='${Status}' ward 2>/dev/null | grep -q 'ok installed\|config-files' && fail "ward is still installed after purge"
for path in /usr/bin/ward /etc/ward /usr/lib/systemd/system/ward.service /usr/share/doc/ward; do
    [ ! -e "$path" ] || fail "$path is left after purge"
done
echo "package: $(basename "$deb") installed ($(grep -c . <<<"$listed") paths), checked and purged"
