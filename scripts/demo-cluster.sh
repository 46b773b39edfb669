#!/usr/bin/env bash
# tfshare cluster demo: the task force's broker as a 3-node JetStream cluster on this machine's
# loopback; the agencies' agents are given every node. Mid-way, while police alerts flow, the
# node the NGO hotline's agent is connected to is killed (SIGKILL, a machine lost); the agents
# move to the other nodes, every alert arrives exactly once, the node comes back.
# Runs unattended (passphrases come from files) in a fresh directory under demo-cluster-out/.
#
# Each node runs as its own nats-server process, as on three machines (one service each):
# 'tfshare broker config --cluster 3' writes their configurations, 'tfshare broker provision'
# gives the streams and buckets three replicas. ('tfshare broker up --cluster 3' runs all
# three under one command for tests; it stops them all when one exits.)
set -euo pipefail
cd "$(dirname "$0")/.."
TFSHARE=${TFSHARE:-tfshare}
NATS_SERVER=${NATS_SERVER:-nats-server}
OUT=${DEMO_DIR:-demo-cluster-out}
ALERTS=${DEMO_ALERTS:-16}   # alerts police publishes; the node is killed after a third of them
rm -rf "$OUT"; mkdir -p "$OUT/keys"
export TFSHARE_HOME="$OUT/home"
export TFSHARE_KDF=interactive   # faster key files for the demo; the default is "moderate"
K="$OUT/keys"

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m'; N=$'\033[0m'; else B=; N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
run()  { printf '$ %s\n' "$*"; "$@"; }
free_port() {  # the first of $1 consecutive free ports on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
count = int(sys.argv[1])
for _ in range(100):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); first = s.getsockname()[1]
    if first + count > 65535:
        continue
    try:
        for port in range(first, first + count):
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(first); break
PY
}

step "1. The agencies' keys and the task force's roster (as in 'make demo')"
for a in coord police-nl ngo-hotline labour-insp; do
  printf 'demo passphrase of %s\n' "$a" > "$K/$a.pass"; chmod 600 "$K/$a.pass"
done
run $TFSHARE keys init coord       --dir "$K" --name "Task force coordination office" --passphrase-file "$K/coord.pass" >/dev/null
run $TFSHARE keys init police-nl   --dir "$K" --name "Police, human trafficking unit" --passphrase-file "$K/police-nl.pass" >/dev/null
run $TFSHARE keys init ngo-hotline --dir "$K" --name "NGO hotline"                    --passphrase-file "$K/ngo-hotline.pass" >/dev/null
run $TFSHARE keys init labour-insp --dir "$K" --name "Labour inspectorate"            --passphrase-file "$K/labour-insp.pass" >/dev/null
R="$OUT/taskforce.roster"
run $TFSHARE roster init --taskforce nl-north --coordinator "$K/coord.card" --threshold 1 --out "$R" >/dev/null
for a in police-nl ngo-hotline labour-insp; do run $TFSHARE roster add "$R" "$K/$a.card" >/dev/null; done
run $TFSHARE roster grant "$R" police-nl   --channel alerts --read --write >/dev/null
run $TFSHARE roster grant "$R" ngo-hotline --channel alerts --read >/dev/null
run $TFSHARE roster grant "$R" labour-insp --channel alerts --read >/dev/null
run $TFSHARE roster grant "$R" coord       --channel alerts --read >/dev/null   # the audit service
run $TFSHARE roster sign "$R" --key "$K/coord.key" --passphrase-file "$K/coord.pass" >/dev/null
run $TFSHARE roster anchor "$R" --out "$OUT/taskforce.anchor" >/dev/null
COMMON=(--roster "$R" --anchor "$OUT/taskforce.anchor")

step "2. Three broker nodes: configured together, each run as its own nats-server"
PORT=$(free_port 3); CLUSTER_PORT=$(free_port 3)
D="$OUT/cluster"
run $TFSHARE broker config "${COMMON[@]}" --dir "$D" --cluster 3 --port "$PORT" --cluster-port "$CLUSTER_PORT"
NODES=("nats://127.0.0.1:$PORT" "nats://127.0.0.1:$((PORT + 1))" "nats://127.0.0.1:$((PORT + 2))")
SERVERS=$(IFS=,; echo "${NODES[*]}")
PIDS=(); NODE_PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
wait_port() {
  for _ in $(seq 150); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: nothing listens on port $1; see $D/nats-*.log" >&2; exit 1
}
node_up() {  # node_up I: start node I (1..3) on its own data
  "$NATS_SERVER" -c "$D/nats-$1.conf" >>"$D/nats-$1.log" 2>&1 &
  NODE_PIDS[$1 - 1]=$!
}
for i in 1 2 3; do
  printf '$ %s\n' "nats-server -c $D/nats-$i.conf &"
  node_up "$i"
done
for i in 0 1 2; do wait_port $((PORT + i)); done
echo "-- the streams and buckets with three replicas (retried while the nodes elect their leaders):"
printf '$ %s\n' "tfshare broker provision --roster ... --dir $D --server $SERVERS"
for try in $(seq 30); do
  if $TFSHARE broker provision "${COMMON[@]}" --dir "$D" --server "$SERVERS" >"$OUT/provision.log" 2>&1; then
    break
  fi
  [ "$try" -lt 30 ] || { cat "$OUT/provision.log" >&2; exit 1; }
  sleep 1
done
cat "$OUT/provision.log"

step "3. The agencies' agents and the audit service, each given all three nodes"
LIVE=("${COMMON[@]}" --server "$SERVERS")
declare -A AGENT
for a in police-nl ngo-hotline labour-insp; do
  printf '$ %s\n' "tfshare agent run --key $K/$a.key ... --server $SERVERS &"
  $TFSHARE --log-level info agent run --key "$K/$a.key" --passphrase-file "$K/$a.pass" "${LIVE[@]}" \
      >"$OUT/agent-$a.log" 2>&1 &
  AGENT[$a]=$!; PIDS+=($!)
done
printf '$ %s\n' "tfshare audit serve --key $K/coord.key ... --server $SERVERS &"
$TFSHARE --log-level info audit serve --key "$K/coord.key" --passphrase-file "$K/coord.pass" "${LIVE[@]}" \
    --every 5 --interval 1 >"$OUT/audit.log" 2>&1 &
PIDS+=($!)
for a in police-nl ngo-hotline labour-insp; do
  for _ in $(seq 150); do grep -q "consuming from" "$OUT/agent-$a.log" && break; sleep 0.1; done
done

# The node a process is connected to: its TCP connection to one of the nodes' client ports.
node_of() {
  python3 - "$1" "$PORT" <<'PY'
import os, sys
pid, first = sys.argv[1], int(sys.argv[2])
inodes = set()
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        inodes.add(target[8:-1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        port = int(f[2].rsplit(":", 1)[1], 16)
        if f[3] == "01" and f[9] in inodes and first <= port < first + 3:
            print(port - first + 1); sys.exit()
PY
}

step "4. Police publishes $ALERTS alerts; after a third of them a node is killed"
SENT="$OUT/sent.txt"; : >"$SENT"
POLICE=(--key "$K/police-nl.key" --passphrase-file "$K/police-nl.pass")
publish_all() {
  for n in $(seq "$ALERTS"); do
    $TFSHARE publish alert --channel alerts --file examples/alert.json --json "${POLICE[@]}" "${LIVE[@]}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["msg_id"])' >>"$SENT"
    echo "   [police] alert $n of $ALERTS published"
  done
}
publish_all &
PUBLISHER=$!
for _ in $(seq 600); do [ "$(wc -l <"$SENT")" -ge $((ALERTS / 3)) ] && break; sleep 0.1; done
VICTIM=$(node_of "${AGENT[ngo-hotline]}")
if [ -n "$VICTIM" ]; then
  echo "-- the NGO hotline's agent is connected to node $VICTIM (${NODES[$VICTIM - 1]}): killing it"
else
  VICTIM=2; echo "-- (the NGO hotline's agent is between connections) killing node 2 (${NODES[1]})"
fi
printf '$ %s\n' "kill -KILL <nats-server of node $VICTIM>"
kill -KILL "${NODE_PIDS[$VICTIM - 1]}"; wait "${NODE_PIDS[$VICTIM - 1]}" 2>/dev/null || true
wait "$PUBLISHER"
echo "(all $ALERTS alerts published while node $VICTIM was down for most of them)"

step "5. Every alert arrived, exactly once, with node $VICTIM still down"
count_inbox() {  # count_inbox AGENCY: every sent msg_id in its inbox exactly once?
  $TFSHARE inbox list --json --key "$K/$1.key" --passphrase-file "$K/$1.pass" "${COMMON[@]}" 2>/dev/null \
    | python3 -c '
import json, sys
sent = open(sys.argv[1]).read().split()
got = [m["msg_id"] for m in json.load(sys.stdin)["messages"]]
wanted = [g for g in got if g in set(sent)]
print(f"{len(sent)} sent, {len(wanted)} in the inbox, {len(set(wanted))} distinct")
sys.exit(0 if len(wanted) == len(set(wanted)) == len(sent) else 1)' "$SENT"
}
for a in ngo-hotline labour-insp; do
  for _ in $(seq 120); do count_inbox "$a" >/dev/null && break; sleep 0.5; done
  printf '   %-12s %s\n' "$a" "$(count_inbox "$a" || true)"
  count_inbox "$a" >/dev/null || { echo "demo: $a is missing alerts or has one twice" >&2; exit 1; }
done
echo "-- the NGO hotline's agent moved to node $(node_of "${AGENT[ngo-hotline]}") (its status):"
run $TFSHARE agent status --key "$K/ngo-hotline.key" "${COMMON[@]}"

step "6. Node $VICTIM comes back on its own data and catches up"
printf '$ %s\n' "nats-server -c $D/nats-$VICTIM.conf &"
node_up "$VICTIM"
wait_port $((PORT + VICTIM - 1))
sleep 2
echo "-- the coordinator's audit log holds each alert once and verifies:"
COORD=(--key "$K/coord.key" --passphrase-file "$K/coord.pass" "${COMMON[@]}")
audit_sent() {  # how many of police's alerts the audit log holds (one entry per envelope)
  $TFSHARE audit report --since "$(date -u +%F)" --format json "${COORD[@]}" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["sent"])' 2>/dev/null || echo 0
}
for _ in $(seq 60); do [ "$(audit_sent)" -ge "$ALERTS" ] && break; sleep 0.5; done
[ "$(audit_sent)" -eq "$ALERTS" ] || { echo "demo: the audit log holds $(audit_sent) alerts, not $ALERTS" >&2; exit 1; }
run $TFSHARE audit report --since "$(date -u +%F)" "${COORD[@]}"
run $TFSHARE audit verify "${COORD[@]}"

step "7. Clean shutdown"
cleanup
trap - EXIT
grep -h '"agent_stopped"' "$OUT"/agent-*.log | cut -c1-160 || true

step "Done: a node of the task force's broker was killed mid-stream; the agents moved to the others and every alert arrived exactly once."
