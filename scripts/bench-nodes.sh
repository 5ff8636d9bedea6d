#!/usr/bin/env bash
# Relay rate and CPU per datagram of ward and of v2ray as clients of the same
# Shadowsocks (ss-server, aes-256-gcm) and Trojan (trojan-gfw, TLS with a
# test CA) nodes on loopback, in one run. Each client takes datagrams on a
# UDP port (ward: a Forward inbound; v2ray: a dokodemo-door UDP inbound) and
# relays them through a node to a sink that counts them. A sender offers
# RATE datagrams/s of 64 B for SECS seconds per run (bounded: RATE*SECS
# datagrams; the sink stops 1 s after the last one). Runs are interleaved,
# ROUNDS rounds, the client going first alternating; reported are the
# medians of the delivered datagrams/s, the loss, and the client's and the
# node's CPU time (utime+stime from /proc/PID/stat) per delivered datagram,
# and ward's figures over v2ray's. The sender and the sink run on CPU 0,
# the clients and nodes on the last CPU (when there are two and taskset).
# Payloads stay at 64 B: trojan-gfw may close UDP sessions on bursts over
# 8192 B.
#   scripts/bench-nodes.sh                 # ROUNDS=5 SECS=3 RATE=20000
#   ROUNDS=7 RATE=50000 scripts/bench-nodes.sh
# As root, missing packages (shadowsocks-libev trojan v2ray openssl) are
# installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
ROUNDS=${ROUNDS:-5} SECS=${SECS:-3} RATE=${RATE:-20000}
LEN=64 METHOD=aes-256-gcm SNI=node.test

if [ "$(id -u)" -eq 0 ]; then
    scripts/ensure-packages.sh shadowsocks-libev trojan v2ray openssl
fi
for tool in ss-server trojan v2ray openssl python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool not installed" >&2; exit 1; }
done
cargo build --release --locked --quiet --bin ward
WARD=$PWD/target/release/ward

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

# Loopback ports free for TCP and UDP now (the daemons are told them).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    held += [t, u]; ports.append(port)
print(*ports)
PY
}
read -r SS_PORT TJ_PORT FALLBACK_PORT WARD_SS WARD_TJ V2_SS V2_TJ SINK_SS SINK_TJ <<<"$(free_ports 9)"

pin=()
last_cpu=$(($(nproc) - 1))
if [ "$last_cpu" -ge 1 ] && command -v taskset >/dev/null; then
    pin=(taskset -c "$last_cpu")
    load_pin=(taskset -c 0)
else
    load_pin=()
fi

# The load: a sender at a fixed rate and a sink that counts.
cat >"$dir/load.py" <<'PY'
import socket, sys, time
mode = sys.argv[1]
if mode == "sink":
    port, secs = int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", port))
    open(sys.argv[4], "w").write("ready\n")
    buf, n, deadline = bytearray(2048), 0, time.monotonic() + secs + 10
    s.settimeout(secs + 5)
    while time.monotonic() < deadline:
        try:
            s.recv_into(buf)
        except socket.timeout:
            break
        n += 1
        s.settimeout(1.0)  # 1 s after the last datagram, the run is over
    print(n)
else:
    host, port, rate, secs, length = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload, total, sent = b"x" * length, int(rate * secs), 0
    start = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            try:
                s.sendto(payload, (host, port))
            except OSError:
                pass  # a full socket buffer: counted as lost
            sent += 1
        time.sleep(0.0005)
    print(sent, time.monotonic() - start)
PY

# A CA and a certificate for the Trojan node.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$SNI" \
    -keyout "$dir/node.key" -out "$dir/node.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\n' "$SNI" >"$dir/ext"
openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/ext" -out "$dir/node.pem" 2>/dev/null

PASSWORD=bench$RANDOM$RANDOM
start_daemon() { # name, then the command
    local name=$1
    shift
    "${pin[@]}" "$@" >"$dir/$name.log" 2>&1 &
    pids+=($!)
    eval "${name}_pid=$!"
}
wait_for() { # what, test command...
    local what=$1
    shift
    for _ in $(seq 100); do "$@" 2>/dev/null && return 0; sleep 0.1; done
    echo "error: $what did not come up" >&2
    exit 1
}
udp_bound() { ss -Hulnp "sport = :$1" | grep -q "pid=$2,"; }
tcp_bound() { ss -Htlnp "sport = :$1" | grep -q "pid=$2,"; }

start_daemon ss ss-server -s 127.0.0.1 -p "$SS_PORT" -k "$PASSWORD" -m "$METHOD" -u
cat >"$dir/trojan.json" <<EOF
{"run_type": "server", "local_addr": "127.0.0.1", "local_port": $TJ_PORT,
 "remote_addr": "127.0.0.1", "remote_port": $FALLBACK_PORT, "password": ["$PASSWORD"], "log_level": 2,
 "ssl": {"cert": "$dir/node.pem", "key": "$dir/node.key", "sni": "$SNI"}}
EOF
start_daemon tj trojan -c "$dir/trojan.json"
wait_for ss-server udp_bound "$SS_PORT" "$ss_pid"
wait_for trojan tcp_bound "$TJ_PORT" "$tj_pid"

cat >"$dir/v2ray.json" <<EOF
{"log": {"loglevel": "warning"},
 "inbounds": [
  {"tag": "in-ss", "listen": "127.0.0.1", "port": $V2_SS, "protocol": "dokodemo-door",
   "settings": {"address": "127.0.0.1", "port": $SINK_SS, "network": "udp"}},
  {"tag": "in-tj", "listen": "127.0.0.1", "port": $V2_TJ, "protocol": "dokodemo-door",
   "settings": {"address": "127.0.0.1", "port": $SINK_TJ, "network": "udp"}}],
 "outbounds": [
  {"tag": "out-ss", "protocol": "shadowsocks", "settings": {"servers": [
    {"address": "127.0.0.1", "port": $SS_PORT, "method": "$METHOD", "password": "$PASSWORD"}]}},
  {"tag": "out-tj", "protocol": "trojan", "settings": {"servers": [
    {"address": "127.0.0.1", "port": $TJ_PORT, "password": "$PASSWORD"}]},
   "streamSettings": {"security": "tls", "tlsSettings": {"serverName": "$SNI",
    "certificates": [{"usage": "verify", "certificateFile": "$dir/ca.pem"}]}}}],
 "routing": {"rules": [
  {"type": "field", "inboundTag": ["in-ss"], "outboundTag": "out-ss"},
  {"type": "field", "inboundTag": ["in-tj"], "outboundTag": "out-tj"}]}}
EOF
start_daemon v2 v2ray -config "$dir/v2ray.json"
wait_for v2ray udp_bound "$V2_TJ" "$v2_pid"

cat >"$dir/ward.ron" <<EOF
(
    admin: (socket: "$dir/admin.sock"),
    log: (level: "warn"),
    dialers: {
        "ss": Shadowsocks((server: "127.0.0.1:$SS_PORT", method: "$METHOD", password: "$PASSWORD")),
        "tj": Trojan((server: "127.0.0.1:$TJ_PORT", password: "$PASSWORD", sni: Some("$SNI"), ca: Some("$dir/ca.pem"))),
    },
    udp: (
        inbounds: [
            Forward((listen: "127.0.0.1:$WARD_SS", to: "127.0.0.1:$SINK_SS")),
            Forward((listen: "127.0.0.1:$WARD_TJ", to: "127.0.0.1:$SINK_TJ")),
        ],
        routes: [ (dst_port: [$SINK_SS], to: "ss"), (dst_port: [$SINK_TJ], to: "tj") ],
    ),
)
EOF
clients=(v2ray)
if "$WARD" check --config "$dir/ward.ron" >"$dir/ward-check.log" 2>&1; then
    start_daemon ward "$WARD" run --config "$dir/ward.ron"
    wait_for ward udp_bound "$WARD_TJ" "$ward_pid"
    clients=(ward v2ray)
else
    echo "ward refuses the config (no Shadowsocks/Trojan dialers in this build?); measuring v2ray only:"
    sed 's/^/    /' "$dir/ward-check.log"
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One run: client, node; prints "client node sent delivered secs client_ticks node_ticks".
run() {
    local client=$1 node=$2 port sink pid node_pid
    case $client/$node in
        ward/ss) port=$WARD_SS ;; ward/tj) port=$WARD_TJ ;;
        v2ray/ss) port=$V2_SS ;; v2ray/tj) port=$V2_TJ ;;
    esac
    if [ "$node" = ss ]; then sink=$SINK_SS node_pid=$ss_pid; else sink=$SINK_TJ node_pid=$tj_pid; fi
    if [ "$client" = ward ]; then pid=$ward_pid; else pid=$v2_pid; fi
    rm -f "$dir/sink.ready"
    "${load_pin[@]}" python3 "$dir/load.py" sink "$sink" "$SECS" "$dir/sink.ready" >"$dir/sink.out" &
    local sink_pid=$!
    wait_for sink test -s "$dir/sink.ready"
    local c0 n0 c1 n1 sent secs
    c0=$(cpu_ticks "$pid") n0=$(cpu_ticks "$node_pid")
    read -r sent secs < <("${load_pin[@]}" python3 "$dir/load.py" send 127.0.0.1 "$port" "$RATE" "$SECS" "$LEN")
    wait "$sink_pid"
    c1=$(cpu_ticks "$pid") n1=$(cpu_ticks "$node_pid")
    echo "$client $node $sent $(cat "$dir/sink.out") $secs $((c1 - c0)) $((n1 - n0))"
}

# Warm-up: sessions and TLS connections open before anything is measured.
for client in "${clients[@]}"; do
    for node in ss tj; do SECS=1 RATE=1000 run "$client" "$node" >/dev/null; done
done
echo "== $ROUNDS rounds of ${SECS} s at $RATE datagrams/s, $LEN B (clients: ${clients[*]})"
results=$dir/results
: >"$results"
for round in $(seq "$ROUNDS"); do
    order=("${clients[@]}")
    if [ $((round % 2)) -eq 0 ] && [ ${#clients[@]} -eq 2 ]; then order=("${clients[1]}" "${clients[0]}"); fi
    for client in "${order[@]}"; do
        for node in ss tj; do
            line=$(run "$client" "$node")
            echo "   round $round: $line"
            echo "$line" >>"$results"
        done
    done
done

python3 - "$results" "$(getconf CLK_TCK)" "$RATE" <<'PY'
import sys, statistics
path, tick, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for line in open(path):
    client, node, sent, got, secs, cticks, nticks = line.split()
    sent, got, secs = int(sent), int(got), float(secs)
    rows.setdefault((node, client), []).append((
        got / secs,
        1 - got / sent if sent else 1,
        int(cticks) / tick * 1e6 / max(got, 1),
        int(nticks) / tick * 1e6 / max(got, 1),
    ))
name = {"ss": "Shadowsocks aes-256-gcm (ss-server)", "tj": "Trojan (trojan-gfw)"}
print(f"\n| node | client | delivered datagrams/s | loss | client CPU µs/datagram | node CPU µs/datagram |")
print("|---|---|---:|---:|---:|---:|")
med = {}
for (node, client), runs in sorted(rows.items()):
    m = [statistics.median(col) for col in zip(*runs)]
    med[(node, client)] = m
    print(f"| {name[node]} | {client} | {m[0]:.0f} | {m[1]*100:.2f}% | {m[2]:.2f} | {m[3]:.2f} |")
for node in ("ss", "tj"):
    w, v = med.get((node, "ward")), med.get((node, "v2ray"))
    if w and v:
        print(f"\n{name[node]}: ward/v2ray delivered {w[0]/v[0]:.2f}x, client CPU per datagram {w[2]/v[2]:.2f}x")
print(f"\nOffered {rate} datagrams/s; medians of the rounds. CPU: utime+stime of the process from /proc/PID/stat, {tick} ticks/s.")
PY
