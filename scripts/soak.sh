#!/usr/bin/env bash
# A soak of ward under load and chaos, on loopback only:
#   scripts/soak.sh MINUTES
# Starts knot (the DNS upstream), danted (a SOCKS5 node, n1), a UDP echo
# server and ward (the release build) with DNS and two forward inbounds,
# one direct and one through the node. Warms up, then for MINUTES runs
# dnsperf at a moderate rate and a UDP flow load, and every 7 s kills one
# actor in turn (the DNS upstreams and listeners, dialer n1, a UDP endpoint, an
# inbound) or kills the node and starts it again. Before and after (each
# after the load stopped and a settle period) it records ward's RSS, open
# fds, actor count and DNS latency, and fails when they did not come back:
#   RSS      at most 10% or 2 MiB (whichever is more) above the start
#   fds      at most 2 above the start
#   actors   no more than at the start
#   latency  dnsperf's average latency (the median of five 2 s samples)
#            at most 20% above the start, beyond what knot's own latency,
#            sampled in turn with ward's, says the machine slowed down
#            (it is shared); and growth under 0.05 ms always passes
# Needs knotd, kdig, danted, dnsperf and python3 (scripts/test.sh installs
# them); installs nothing. Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

minutes=${1:-}
if ! [[ $minutes =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ] || [ "$minutes" -gt 1440 ]; then
    echo "usage: scripts/soak.sh MINUTES (1 to 1440)" >&2
    exit 2
fi
for tool in knotd kdig danted dnsperf python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is missing (scripts/test.sh installs it)" >&2; exit 2; }
done

DNS_RATE=1000     # queries a second, during warm-up and soak
UDP_RATE=400      # datagrams a second over both inbounds
UDP_FLOWS=20      # client sockets per inbound; a tenth replaced every second
WARMUP_S=20       # with one kill of each target, 2 s apart
SETTLE_S=12       # past the UDP idle timeout (5 s) of the flows left over
KILL_EVERY_S=7     # each of the 8 targets at least once a minute
SOAK_S=$((minutes * 60))

cargo build --release --locked --quiet
WARD=$PWD/target/release/ward
dir=$(mktemp -d /tmp/ward-soak.XXXXXX)
started=()   # pids of process groups this script started
node_pid=
dns_load=
udp_load=

log() { printf '%s soak: %s\n' "$(date +%T)" "$*"; }

cleanup() {
    local pid
    for pid in $dns_load $udp_load; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${started[@]}" $node_pid; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${started[@]}" $node_pid $dns_load $udp_load; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in a process group of its own (so that it and whatever it
# forks stop together), output to $dir/$1.log; sets $bg_pid.
start_group() {
    setsid "$@" >"$dir/$(basename "$1").log" 2>&1 &
    bg_pid=$!
}

# Polls "$@" until it succeeds, for at most $1 seconds.
wait_for() {
    local secs=$1 deadline
    shift
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Free loopback ports (TCP and UDP alike), held until all are chosen.
read -r KNOT_PORT NODE_PORT DNS_PORT FWD_DIRECT FWD_NODE ECHO_A ECHO_B < <(python3 - <<'PY'
import socket
held, ports = [], []
while len(ports) < 7:
    t = socket.socket(); t.bind(("127.0.0.1", 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", t.getsockname()[1]))
    except OSError:
        continue
    held += [t, u]; ports.append(t.getsockname()[1])
print(*ports)
PY
)

# --- the peers -------------------------------------------------------------
{
    printf '$ORIGIN soak.test.\n$TTL 3600\n@ IN SOA ns admin 1 3600 600 86400 60\n@ IN NS ns\nns IN A 127.0.0.1\n'
    for i in $(seq 0 3499); do printf 'h%d IN A 10.%d.%d.%d\n' "$i" $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)); done
    printf '*.n IN A 10.200.0.1\n'
} >"$dir/soak.test.zone"
# The query file, dnsperf's loop: three rounds, each the same 500 hot
# names (cached all along: the cache holds 2,000) shuffled with 1,000 cold
# names seen once a loop (evicted before they come back), a quarter of
# those under n.soak.test, which goes through the node. Two answers in
# three come from upstream.
for round in 0 1 2; do
    {
        for i in $(seq 0 499); do echo "h$i.soak.test A"; done
        for i in $(seq $((500 + round * 1000)) $((1499 + round * 1000))); do
            if [ $((i % 4)) -eq 0 ]; then echo "h$i.n.soak.test A"; else echo "h$i.soak.test A"; fi
        done
    } | shuf --random-source=<(yes)
done >"$dir/queries.txt"

mkdir -p "$dir/knot"
cat >"$dir/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$KNOT_PORT
    rundir: $dir/knot
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: $dir/knot
zone:
  - domain: soak.test
    file: $dir/soak.test.zone
    journal-content: none
log:
  - target: stderr
    any: error
EOF
start_group knotd -c "$dir/knot.conf"
started+=("$bg_pid")

cat >"$dir/danted.conf" <<EOF
logoutput: stderr
internal: 127.0.0.1 port = $NODE_PORT
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }
socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect udpassociate bindreply udpreply }
EOF
start_node() {
    start_group danted -N 1 -f "$dir/danted.conf"
    node_pid=$bg_pid
    wait_for 10 python3 -c "import socket; socket.create_connection(('127.0.0.1', $NODE_PORT), 1)" \
        || { log "danted did not start:"; cat "$dir/danted.log"; exit 1; }
}
# SIGKILL to the node's whole group, as a crash would.
kill_node() {
    kill -KILL -- "-$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
    node_pid=
}
start_node

start_group python3 scripts/soak_udp.py echo "$ECHO_A" "$ECHO_B"
started+=("$bg_pid")

cat >"$dir/ward.ron" <<EOF
(
    admin: (socket: "$dir/admin.sock"),
    log: (level: "warn"),
    dialers: {
        "n1": Socks5((server: "127.0.0.1:$NODE_PORT")),
    },
    groups: {
        // n1 while it is up, direct while it is not.
        "nodes": (dialers: ["n1", "direct"], policy: Fixed(0)),
    },
    health: (interval_s: 5, udp_dns: Some("127.0.0.1:$KNOT_PORT")),
    dns: (
        listen: ["127.0.0.1:$DNS_PORT"],
        upstreams: {
            "knot": (url: "udp://127.0.0.1:$KNOT_PORT"),
            "via-node": (url: "udp://127.0.0.1:$KNOT_PORT", via: "nodes"),
        },
        default: ["knot"],
        routes: [ (qname_suffix: ["n.soak.test"], to: ["via-node", "knot"]) ],
        cache: (size: 2000),
    ),
    udp: (
        inbounds: [
            Forward((listen: "127.0.0.1:$FWD_DIRECT", to: "127.0.0.1:$ECHO_A")),
            Forward((listen: "127.0.0.1:$FWD_NODE", to: "127.0.0.1:$ECHO_B")),
        ],
        routes: [ (dst_port: [$ECHO_B], to: "nodes") ],
        default: "direct",
        idle: (dns_s: 5, quic_s: 5, other_s: 5),
    ),
)
EOF
"$WARD" check --config "$dir/ward.ron" >/dev/null
start_group "$WARD" run --config "$dir/ward.ron"
ward_pid=$bg_pid
started+=("$ward_pid")
ctl() { "$WARD" ctl --socket "$dir/admin.sock" "$@"; }

answers() { [ "$(kdig +short +timeout=1 +retry=0 -p "$1" @127.0.0.1 h1.soak.test A)" = 10.0.0.1 ]; }
wait_for 10 answers "$KNOT_PORT" || { log "knot does not answer:"; cat "$dir/knotd.log"; exit 1; }
wait_for 10 answers "$DNS_PORT" || { log "ward does not answer:"; cat "$dir/ward.log"; exit 1; }
log "ward $ward_pid: dns 127.0.0.1:$DNS_PORT, forward inbounds :$FWD_DIRECT (direct) and :$FWD_NODE (through n1), in $dir"

# --- measurements ----------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$ward_pid/status"; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$ward_pid/status"; }
fds() { find "/proc/$ward_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# From `ward ctl tree --json`: "actors" (nodes in the tree), "restarts"
# (their sum) or "endpoint" (the path of one UDP endpoint, if any).
tree() {
    ctl tree --json | python3 -c '
import json, sys
nodes, todo = [], [json.load(sys.stdin)]
while todo:
    nodes.append(todo.pop())
    todo += nodes[-1].get("children", [])
what = sys.argv[1]
if what == "actors":
    print(len(nodes))
elif what == "restarts":
    print(sum(n.get("restarts", 0) for n in nodes))
else:
    print(next((n["path"] for n in nodes if n["path"].startswith("udp/endpoints/")), ""))' "$1"
}
# dnsperf's average latency in ms of the DNS server on port $1 over 2 s.
sample_ms() {
    dnsperf -s 127.0.0.1 -p "$1" -d "$dir/queries.txt" -l 2 -Q "$DNS_RATE" -c 4 -T 1 2>&1 \
        | awk '/Average Latency/ { printf "%.4f", $4 * 1000 }'
}
# "WARD KNOT": the median of five samples of each, taken in turn. knot
# answers the same names itself: what slows it down too is the machine.
latency_ms() {
    local i ward=() knot=()
    for i in 1 2 3 4 5; do
        ward+=("$(sample_ms "$DNS_PORT")")
        knot+=("$(sample_ms "$KNOT_PORT")")
    done
    printf '%s %s\n' "$(printf '%s\n' "${ward[@]}" | sort -n | sed -n 3p)" \
        "$(printf '%s\n' "${knot[@]}" | sort -n | sed -n 3p)"
}
n1_up() {
    ctl dialers --json | python3 -c '
import json, sys
sys.exit(not any(d["name"] == "n1" and d["udp"]["up"] for d in json.load(sys.stdin)["dialers"]))'
}
# Load stopped: the same state at both ends. The node is up and known to
# be (a probe), and the via-node upstream goes through it: an upstream
# keeps the dialer it opened with until that one goes down, so after a node
# kill it may still be on direct (per-query sockets) rather than on its
# four associations through n1 (8 fds). Then the leftover flows idle out.
quiesce() {
    ctl probe n1 >/dev/null
    wait_for 20 n1_up || { log "n1 is not up again"; ctl dialers; exit 1; }
    ctl kill dns/upstreams/via-node >/dev/null
    log "settling ${SETTLE_S} s"
    sleep "$SETTLE_S"
}
snapshot() {
    local lat
    lat=$(latency_ms)
    sleep 1
    printf '%s %s %s %s\n' "$(rss_kib)" "$(fds)" "$(tree actors)" "$lat"
}

# DNS at DNS_RATE and the UDP flow load, both for $1 seconds.
load() {
    dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$dir/queries.txt" -l "$1" -Q "$DNS_RATE" -c 4 -T 1 >"$dir/dnsperf.out" 2>&1 &
    dns_load=$!
    python3 scripts/soak_udp.py load "$1" "$UDP_RATE" "$UDP_FLOWS" "127.0.0.1:$FWD_DIRECT" "127.0.0.1:$FWD_NODE" \
        >"$dir/udp.out" 2>&1 &
    udp_load=$!
}
load_done() {
    wait "$dns_load" "$udp_load" || true
    log "$(awk '/Queries sent|Queries completed|Queries lost/ { $1 = $1; printf "%s; ", $0 }' "$dir/dnsperf.out")"
    log "$(cat "$dir/udp.out")"
}

listener_udp="dns/listeners/udp:127.0.0.1:$DNS_PORT"
inbound="udp/inbounds/forward:127.0.0.1:$FWD_NODE"
targets=(dns/upstreams/knot "$listener_udp" dialers/n1 endpoint "$inbound" node dns/upstreams/via-node
    "dns/listeners/tcp:127.0.0.1:$DNS_PORT")
kills=0 failed_kills=0
# Kills the next target in turn.
kill_next() {
    local target=${targets[$((kills % ${#targets[@]}))]} out
    kills=$((kills + 1))
    [ "$target" = endpoint ] && target=$(tree endpoint)
    if [ "$target" = node ]; then
        log "kill -9 the node (danted), restart it in 2 s"
        kill_node
        sleep 2
        start_node
    elif [ -z "$target" ]; then
        failed_kills=$((failed_kills + 1))
        log "no UDP endpoint to kill"
    elif out=$(ctl kill "$target" 2>&1); then
        log "$out"
    else
        failed_kills=$((failed_kills + 1))
        log "kill $target failed: $out"
    fi
    log "  rss $(rss_kib) KiB, fds $(fds), actors $(tree actors), threads $(threads)"
}

# First costs (a node's failover, a restarted listener's buffers) are
# paid here, once, so that the soak measures what repeats.
log "warm-up: ${WARMUP_S} s of load, each target killed once"
load "$WARMUP_S"
for _ in "${targets[@]}"; do
    sleep 2
    kill_next
done
load_done
quiesce
read -r rss0 fds0 actors0 lat0 knot0 < <(snapshot)
log "start: rss ${rss0} KiB, fds ${fds0}, actors ${actors0}, latency ${lat0} ms (knot ${knot0} ms)"

# --- the soak ----------------------------------------------------------------
log "soak: ${minutes} min of load, one kill every ${KILL_EVERY_S} s"
load "$SOAK_S"
end=$((SECONDS + SOAK_S))
while [ $((SECONDS + KILL_EVERY_S)) -le "$end" ]; do
    sleep "$KILL_EVERY_S"
    kill_next
done
load_done
kill -0 "$ward_pid" 2>/dev/null || { log "ward exited:"; tail -20 "$dir/ward.log"; exit 1; }
[ -n "$node_pid" ] || start_node
quiesce
read -r rss1 fds1 actors1 lat1 knot1 < <(snapshot)
log "end:   rss ${rss1} KiB, fds ${fds1}, actors ${actors1}, latency ${lat1} ms (knot ${knot1} ms)"
ctl stats | sed 's/^/    /'

verdict=$(python3 - "$rss0" "$fds0" "$actors0" "$lat0" "$knot0" "$rss1" "$fds1" "$actors1" "$lat1" "$knot1" <<'PY'
import sys
rss0, fds0, act0, lat0, knot0, rss1, fds1, act1, lat1, knot1 = map(float, sys.argv[1:])
bad = []
allowed = max(lat0 * 1.20 * knot1 / knot0, lat0 + 0.05) if lat0 and knot0 and knot1 else 0
print(f"latency: ward {lat0:.3f} -> {lat1:.3f} ms, knot {knot0:.3f} -> {knot1:.3f} ms, "
      f"ward's allowed up to {allowed:.3f} ms", file=sys.stderr)
if rss1 > rss0 + max(rss0 * 0.10, 2048):
    bad.append(f"RSS grew {rss0:.0f} -> {rss1:.0f} KiB (allowed: 10% or 2 MiB)")
if fds1 > fds0 + 2:
    bad.append(f"open fds grew {fds0:.0f} -> {fds1:.0f} (allowed: 2)")
if act1 > act0:
    bad.append(f"actors grew {act0:.0f} -> {act1:.0f}")
if not (lat0 and lat1 and knot0 and knot1):
    bad.append("no latency measured")
elif lat1 > allowed:
    bad.append(f"DNS latency grew {lat0:.3f} -> {lat1:.3f} ms while knot's went {knot0:.3f} -> {knot1:.3f} ms "
               f"(allowed: 20% beyond knot's change, or 0.05 ms)")
print("; ".join(bad))
PY
)
log "$kills kills ($failed_kills failed), $(tree restarts) restarts in the tree"
if [ -n "$verdict" ]; then
    log "FAILED: $verdict"
    exit 1
fi
log "passed: RSS, fds, actors and latency came back"
