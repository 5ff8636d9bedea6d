#!/usr/bin/env bash
# Measures ward's UDP relay beside socat and the raw loopback rate (see
# benches/udp_relay.rs) and writes the results into docs/benchmarks.md.
# Needs root: installs dante-server and socat when missing, runs danted,
# and raises the open-files limit for 10,000 client sockets. About a minute.
#   scripts/bench-udp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/ensure-packages.sh dante-server socat
ulimit -n "$(ulimit -Hn)"
out=$(cargo bench --locked --bench udp_relay 2>/dev/null | grep -v '^running\|^test result')
echo "$out"
python3 - "$out" <<'PY'
import sys, datetime, os
out = sys.argv[1]
path = "docs/benchmarks.md"
text = open(path).read()
cpus = os.cpu_count()
section = (f"<!-- udp-bench -->\n## UDP relay\n\nProduced by `scripts/bench-udp.sh` on {datetime.date.today()} ({cpus} CPUs): one sender\n"
           "blasting datagrams for 3 s per path, a sink counting arrivals, then the answer direction (a target\n"
           "blasting back through the path to the client); medians of 3 runs, interleaved.\n"
           "Every path runs on the same two cores as the sender and the sink.\n\n" + out.strip() + "\n<!-- /udp-bench -->")
start, end = text.find("<!-- udp-bench -->"), text.find("<!-- /udp-bench -->")
if start >= 0 and end >= 0:
    text = text[:start] + section + text[end + len("<!-- /udp-bench -->"):]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
