#!/usr/bin/env bash
# tfshare demo: a task force of one coordinator and three agencies, built and used offline.
# Runs unattended (passphrases come from files) in a fresh directory under demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
TFSHARE=${TFSHARE:-tfshare}
OUT=${DEMO_DIR:-demo-out}
rm -rf "$OUT"; mkdir -p "$OUT/keys" "$OUT/msgs"
export TFSHARE_HOME="$OUT/home"
export TFSHARE_KDF=interactive   # faster key files for the demo; the default is "moderate"
K="$OUT/keys"

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m'; N=$'\033[0m'; else B=; N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
run()  { printf '$ %s\n' "$*"; "$@"; }
expect_reject() {  # run a command that must be refused with exit code 3
  printf '$ %s\n' "$*"
  set +e; "$@"; rc=$?; set -e
  if [ "$rc" -ne 3 ]; then echo "demo: expected exit 3, got $rc" >&2; exit 1; fi
  echo "(exit $rc, as expected)"
}

step "1. Each agency creates its keys (secret .key, public .card)"
for a in coord police-nl ngo-hotline labour-insp outsider keyman; do
  printf 'demo passphrase of %s\n' "$a" > "$K/$a.pass"; chmod 600 "$K/$a.pass"
done
run $TFSHARE keys init coord       --dir "$K" --name "Task force coordination office" --passphrase-file "$K/coord.pass"
run $TFSHARE keys init police-nl   --dir "$K" --name "Police, human trafficking unit" --passphrase-file "$K/police-nl.pass" >/dev/null
run $TFSHARE keys init ngo-hotline --dir "$K" --name "NGO hotline"                    --passphrase-file "$K/ngo-hotline.pass" >/dev/null
run $TFSHARE keys init labour-insp --dir "$K" --name "Labour inspectorate"            --passphrase-file "$K/labour-insp.pass" >/dev/null
run $TFSHARE keys init outsider    --dir "$K" --name "Not a member"                   --passphrase-file "$K/outsider.pass" >/dev/null
run $TFSHARE keys init keyman      --dir "$K" --name "Task force key manager"         --passphrase-file "$K/keyman.pass" >/dev/null

step "2. The coordinator builds the roster, checking each card's fingerprint by phone"
run $TFSHARE keys show "$K/police-nl.card"
R="$OUT/taskforce.roster"
run $TFSHARE roster init --taskforce nl-north --coordinator "$K/coord.card" --threshold 1 --out "$R"
for a in police-nl ngo-hotline labour-insp; do run $TFSHARE roster add "$R" "$K/$a.card"; done
run $TFSHARE roster grant "$R" police-nl   --channel alerts --read --write
run $TFSHARE roster grant "$R" ngo-hotline --channel alerts --read
run $TFSHARE roster grant "$R" labour-insp --channel alerts --read --write
run $TFSHARE roster grant "$R" ngo-hotline --channel tips --write
run $TFSHARE roster grant "$R" police-nl   --channel tips --read
run $TFSHARE roster grant "$R" labour-insp --channel tips --read
run $TFSHARE roster grant "$R" labour-insp --channel redflags --write
run $TFSHARE roster grant "$R" police-nl   --channel redflags --read
echo "-- receipts: every agency acknowledges what it received, to the coordinator (the audit trail):"
for a in police-nl ngo-hotline labour-insp; do run $TFSHARE roster grant "$R" "$a" --channel receipts --write; done
run $TFSHARE roster grant "$R" coord --channel receipts --read
run $TFSHARE roster grant "$R" coord --channel alerts --read   # the auditor reads alerts: handling, deadlines
echo "-- bulletins: the police's bulletins to every agency, in epoch mode (one key per channel and"
echo "   epoch, made and delivered by the task force's key manager):"
run $TFSHARE roster add "$R" "$K/keyman.card" --role key-manager
run $TFSHARE roster grant "$R" police-nl   --channel bulletins --read --write
run $TFSHARE roster grant "$R" ngo-hotline --channel bulletins --read
run $TFSHARE roster grant "$R" labour-insp --channel bulletins --read
run $TFSHARE roster channel "$R" bulletins --modes epoch
run $TFSHARE roster sign "$R" --key "$K/coord.key" --passphrase-file "$K/coord.pass"
run $TFSHARE roster anchor "$R" --out "$OUT/taskforce.anchor"
run $TFSHARE roster show "$R"

step "3. The message types everyone agreed on (the schema registry)"
COMMON=(--roster "$R" --anchor "$OUT/taskforce.anchor")
export TFSHARE_REGISTRY="$OUT/registry"
run $TFSHARE schema list
run $TFSHARE schema validate tf.tip_summary/1 examples/tip_summary.json
echo "-- the coordinator registers a compatible change (a new optional field) as tf.alert/2:"
python3 - "$OUT/alert-v2.json" "$OUT/alert-broken.json" <<'PY'
import json, sys
doc = json.load(open("schemas/tf.alert/1.json"))
doc["$id"] = "urn:tfshare:schema:tf.alert/2"
doc["properties"]["case_ref"] = {"type": "string", "maxLength": 64,
    "description": "The sending agency's own case reference, if it may be shared."}
json.dump(doc, open(sys.argv[1], "w"), indent=1)
broken = json.load(open(sys.argv[1]))
broken["$id"] = "urn:tfshare:schema:tf.alert/3"
broken["properties"]["severity"]["enum"].remove("low")   # old alerts would no longer read
json.dump(broken, open(sys.argv[2], "w"), indent=1)
PY
run $TFSHARE schema register "$OUT/alert-v2.json" --key "$K/coord.key" --passphrase-file "$K/coord.pass" "${COMMON[@]}"
echo "-- an incompatible change is refused, with its reasons:"
printf '$ %s\n' "tfshare schema register $OUT/alert-broken.json ..."
set +e; $TFSHARE schema register "$OUT/alert-broken.json" --key "$K/coord.key" \
    --passphrase-file "$K/coord.pass" "${COMMON[@]}"; rc=$?; set -e
[ "$rc" -eq 5 ] || { echo "demo: expected exit 5, got $rc" >&2; exit 1; }
echo "(exit $rc)"

step "4. Police seals an urgent alert to the 'alerts' channel (all its readers)"
run $TFSHARE seal --key "$K/police-nl.key" --passphrase-file "$K/police-nl.pass" "${COMMON[@]}" \
    --channel alerts --schema tf.alert/1 --in examples/alert.json --out "$OUT/msgs/alert.tfenv"

step "5. The NGO hotline opens it: verified sender, fingerprint, then the body"
run $TFSHARE open "$OUT/msgs/alert.tfenv" --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}"

step "6. What the receivers refuse"
echo "-- an agency outside the roster cannot send on the channel: tfshare seal refuses it,"
set +e; $TFSHARE seal --key "$K/outsider.key" --passphrase-file "$K/outsider.pass" "${COMMON[@]}" \
    --channel alerts --schema tf.alert/1 --in examples/alert.json --out "$OUT/msgs/x.tfenv"; rc=$?; set -e
[ "$rc" -eq 6 ] || { echo "demo: expected exit 6, got $rc" >&2; exit 1; }
echo "(exit $rc)"
echo "-- and if it forges an alert with its own keys anyway, receivers reject it:"
run python3 scripts/forge.py "$K/outsider.key" "$K/outsider.pass" "$R" "$OUT/msgs/forged.tfenv"
expect_reject $TFSHARE open "$OUT/msgs/forged.tfenv" --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}"
echo "-- a non-member cannot open the real alert (it is not among the recipients):"
expect_reject $TFSHARE open "$OUT/msgs/alert.tfenv" --key "$K/outsider.key" --passphrase-file "$K/outsider.pass" "${COMMON[@]}"
echo "-- a copy with one byte changed in transit:"
python3 - "$OUT/msgs/alert.tfenv" "$OUT/msgs/tampered.tfenv" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[-100] ^= 0x01   # inside the ciphertext
open(sys.argv[2], "wb").write(bytes(data))
PY
expect_reject $TFSHARE open "$OUT/msgs/tampered.tfenv" --key "$K/labour-insp.key" --passphrase-file "$K/labour-insp.pass" "${COMMON[@]}"
echo "-- the same envelope delivered again (replay):"
expect_reject $TFSHARE open "$OUT/msgs/alert.tfenv" --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}"

step "7. Live: the task force's broker and the agencies' agents"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="nats://127.0.0.1:$PORT"
LIVE=(--roster "$R" --anchor "$OUT/taskforce.anchor" --server "$URL")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
broker_up() {
  $TFSHARE broker up --roster "$R" --anchor "$OUT/taskforce.anchor" --dir "$OUT/broker" --port "$PORT" \
      >>"$OUT/broker.log" 2>&1 &
  BROKER=$!; PIDS+=("$BROKER")
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: the broker did not start; see $OUT/broker.log" >&2; exit 1
}
printf '$ %s\n' "tfshare broker up --roster ... --dir $OUT/broker --port $PORT &"
broker_up
echo "(a real nats-server with JetStream; one NATS user per agency, allowed to publish only as itself)"
for a in police-nl ngo-hotline labour-insp; do
  printf '$ %s\n' "tfshare agent run --key $K/$a.key ... &"
  $TFSHARE --log-level info agent run --key "$K/$a.key" --passphrase-file "$K/$a.pass" "${LIVE[@]}" \
      >"$OUT/agent-$a.log" 2>&1 &
  PIDS+=($!)
done
printf '$ %s\n' "tfshare audit serve --key $K/coord.key ... &"
$TFSHARE --log-level info audit serve --key "$K/coord.key" --passphrase-file "$K/coord.pass" "${LIVE[@]}" \
    --every 5 --interval 1 >"$OUT/audit.log" 2>&1 &
AUDIT=$!; PIDS+=("$AUDIT")
echo "(the coordinator's audit service: logs every envelope, verified but not decrypted, and every"
echo " receipt, in a tamper-evident Merkle log; signs a checkpoint every 5 entries or second)"
echo "-- the analysts' live feeds (police: tips and red flags; NGO hotline: alerts):"
$TFSHARE listen --key "$K/police-nl.key" --passphrase-file "$K/police-nl.pass" "${COMMON[@]}" --count 3 \
    > >(sed 's/^/   [police feed] /') 2>/dev/null &
FEED_POLICE=$!
$TFSHARE listen --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}" --count 2 \
    > >(sed 's/^/   [ngo feed]    /') 2>/dev/null &
FEED_NGO=$!
sleep 1

step "8. Field staff publish from the command line"
msg_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["msg_id"])'; }
echo "-- the NGO hotline shares a tip with the police and lets them pass it on (handling H1):"
printf '$ %s\n' "tfshare publish tip --channel tips --file examples/tip_summary.json --field handling.no_forward=false --field handling.code=H1 ..."
TIP_ID=$($TFSHARE publish tip --channel tips --file examples/tip_summary.json --json \
    --field handling.no_forward=false --field handling.code=H1 \
    --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${LIVE[@]}" | msg_id)
echo "msg_id  $TIP_ID"
POLICE=(--key "$K/police-nl.key" --passphrase-file "$K/police-nl.pass")
for _ in $(seq 100); do
  $TFSHARE inbox show "$TIP_ID" "${POLICE[@]}" "${COMMON[@]}" >/dev/null 2>&1 && break; sleep 0.1
done
echo "-- the police escalate the hotline's tip into an urgent alert (its lineage is signed):"
printf '$ %s\n' "tfshare publish alert --escalate $TIP_ID --channel alerts --file examples/alert.json ..."
ALERT_ID=$($TFSHARE publish alert --escalate "$TIP_ID" --channel alerts --file examples/alert.json \
    --json "${POLICE[@]}" "${LIVE[@]}" | msg_id)
echo "msg_id  $ALERT_ID"
run $TFSHARE publish red-flag --channel redflags --file examples/red_flag.json \
    --key "$K/labour-insp.key" --passphrase-file "$K/labour-insp.pass" "${LIVE[@]}"
sleep 2

echo "-- the alert is marked no_forward: the labour inspectorate cannot pass it on:"
for _ in $(seq 100); do
  $TFSHARE inbox show "$ALERT_ID" --key "$K/labour-insp.key" --passphrase-file "$K/labour-insp.pass" \
      "${COMMON[@]}" >/dev/null 2>&1 && break; sleep 0.1
done
expect_reject $TFSHARE publish alert --reshare "$ALERT_ID" \
    --key "$K/labour-insp.key" --passphrase-file "$K/labour-insp.pass" "${LIVE[@]}"

step "9. Leaked NATS credentials are not enough: injected garbage and a forgery are rejected"
run python3 scripts/inject.py "$K/police-nl.key" "$K/police-nl.pass" "$R" "$URL"
sleep 1.5
run $TFSHARE inbox quarantine --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}"

step "10. The broker goes down mid-way; nothing is lost"
kill -INT "$BROKER"; wait "$BROKER" 2>/dev/null || true
echo "(broker stopped)"
run $TFSHARE publish alert --channel alerts --file examples/alert.json \
    --key "$K/labour-insp.key" --passphrase-file "$K/labour-insp.pass" "${LIVE[@]}"
printf '$ %s\n' "tfshare broker up ... &   (restarted on the same data)"
broker_up
for _ in $(seq 100); do kill -0 "$FEED_NGO" 2>/dev/null || break; sleep 0.1; done
for _ in $(seq 50); do kill -0 "$FEED_POLICE" 2>/dev/null || break; sleep 0.1; done
run $TFSHARE inbox list --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}"

step "11. The coordinator: what happened to the police alert? (the audit log)"
sleep 2
COORD=(--key "$K/coord.key" --passphrase-file "$K/coord.pass" "${COMMON[@]}")
run $TFSHARE audit trace "$ALERT_ID" "${COORD[@]}"
echo "-- and the hotline's tip it was escalated from (the coordinator cannot read tips; the log"
echo "   still proves who sent it, to whom, who received it, and what came of it):"
run $TFSHARE audit trace "$TIP_ID" "${COORD[@]}"
echo "-- today's traffic per agency and channel, and requests past their reply deadline:"
run $TFSHARE audit report --since "$(date -u +%F)" "${COORD[@]}"
run $TFSHARE audit overdue "${COORD[@]}"
run $TFSHARE audit verify "${COORD[@]}"
echo "-- an offline proof for someone outside the task force (a court, an oversight body):"
run $TFSHARE audit prove "$ALERT_ID" --out "$OUT/alert.tfproof" "${COORD[@]}"
run $TFSHARE audit check "$OUT/alert.tfproof" --roster "$R" --anchor "$OUT/taskforce.anchor"
echo "-- a proof with one byte changed is refused:"
python3 - "$OUT/alert.tfproof" "$OUT/forged.tfproof" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[40] ^= 0x01
open(sys.argv[2], "wb").write(bytes(data))
PY
printf '$ %s\n' "tfshare audit check $OUT/forged.tfproof --roster ... --anchor ..."
set +e; $TFSHARE audit check "$OUT/forged.tfproof" --roster "$R" --anchor "$OUT/taskforce.anchor"; rc=$?; set -e
[ "$rc" -ne 0 ] || { echo "demo: a forged proof was accepted" >&2; exit 1; }
echo "(exit $rc, as expected)"
echo "-- the NGO hotline discloses the alert's exact content (that message only) to the court:"
run $TFSHARE audit disclose "$ALERT_ID" --out "$OUT/alert.tfdisclosure" \
    --key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}"
run $TFSHARE audit check-disclosure "$OUT/alert.tfdisclosure" --roster "$R" \
    --anchor "$OUT/taskforce.anchor" | head -12

step "12. Epoch mode: one key per channel and epoch; removing a member starts a new epoch"
printf '$ %s\n' "tfshare keys serve --key $K/keyman.key ... &"
$TFSHARE --log-level info keys serve --key "$K/keyman.key" --passphrase-file "$K/keyman.pass" \
    "${LIVE[@]}" >"$OUT/keys.log" 2>&1 &
PIDS+=($!)
echo "(the key manager: a key for each epoch of 'bulletins', sealed to each reader in one"
echo " direct-mode envelope per 256 readers; senders then seal once for the whole channel)"
epoch_held() {  # AGENCY EPOCH: wait until the agency's agent holds that epoch of bulletins
  for _ in $(seq 150); do
    $TFSHARE agent status --key "$K/$1.key" "${COMMON[@]}" --json 2>/dev/null | python3 -c '
import json, sys
held = json.load(sys.stdin)["epoch_keys"]
sys.exit(0 if any(h["channel"] == "bulletins" and h["epoch"] >= int(sys.argv[1]) for h in held) else 1)
' "$2" && return 0
    sleep 0.2
  done
  echo "demo: $1 did not receive epoch $2 of bulletins; see $OUT/keys.log" >&2; exit 1
}
for a in police-nl ngo-hotline labour-insp; do epoch_held "$a" 1; done
run $TFSHARE agent status --key "$K/ngo-hotline.key" "${COMMON[@]}"
echo "-- the police publish a bulletin: sealed once, under epoch 1, for every reader:"
printf '$ %s\n' "tfshare publish alert --channel bulletins --file examples/alert.json ..."
sealed_for() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["msg_id"], d.get("epoch"))'; }
read -r B1 E1 < <($TFSHARE publish alert --channel bulletins --file examples/alert.json --json \
    "${POLICE[@]}" "${LIVE[@]}" | sealed_for)
[ -n "$B1" ] || { echo "demo: the bulletin was not published" >&2; exit 1; }
echo "msg_id  $B1  (epoch mode, epoch $E1: no per-reader wraps)"
LABOUR=(--key "$K/labour-insp.key" --passphrase-file "$K/labour-insp.pass" "${COMMON[@]}")
for _ in $(seq 100); do $TFSHARE inbox show "$B1" "${LABOUR[@]}" >/dev/null 2>&1 && break; sleep 0.1; done
run $TFSHARE inbox list "${LABOUR[@]}"
echo "-- the coordinators remove the labour inspectorate from the task force:"
cp "$R" "$OUT/taskforce-v1.roster"
R2="$OUT/taskforce-v2.roster"; cp "$R" "$R2"
run $TFSHARE roster revoke "$R2" labour-insp --reason retired
run $TFSHARE roster sign "$R2" --key "$K/coord.key" --passphrase-file "$K/coord.pass"
run $TFSHARE roster publish "$R2" --key "$K/coord.key" --passphrase-file "$K/coord.pass" --server "$URL"
for a in police-nl ngo-hotline; do epoch_held "$a" 2; done
echo "-- the key manager saw the readers change and made epoch 2, for the remaining readers only:"
grep -h '"epoch_created"' "$OUT/keys.log" | cut -c1-220
echo "-- the police's next bulletin is sealed under epoch 2:"
read -r B2 E2 < <($TFSHARE publish alert --channel bulletins --file examples/alert.json --json \
    "${POLICE[@]}" "${LIVE[@]}" | sealed_for)
[ -n "$B2" ] || { echo "demo: the bulletin was not published" >&2; exit 1; }
echo "msg_id  $B2  (epoch $E2)"
[ "$E2" = 2 ] || { echo "demo: the bulletin was sealed under epoch $E2, not 2" >&2; exit 1; }
NGO=(--key "$K/ngo-hotline.key" --passphrase-file "$K/ngo-hotline.pass" "${COMMON[@]}")
for _ in $(seq 100); do $TFSHARE inbox show "$B2" "${NGO[@]}" >/dev/null 2>&1 && break; sleep 0.1; done
run $TFSHARE inbox list "${NGO[@]}"
echo "-- the labour inspectorate's agent stopped at the roster that removed it, holding epoch 1"
echo "   only: with its own key and state, the new bulletin does not open, under either roster:"
run python3 scripts/epoch_check.py "$K/labour-insp.key" "$K/labour-insp.pass" \
    "$TFSHARE_HOME/state/labour-insp" "$TFSHARE_HOME/state/police-nl" "$B2" \
    "$OUT/taskforce.anchor" "$OUT/taskforce-v1.roster" "$R2"

step "13. Clean shutdown"
cleanup
trap - EXIT
grep -h '"agent_stopped"' "$OUT"/agent-*.log | cut -c1-160 || true

step "14. Into the analysts' platforms: the police alert as STIX 2.1, for MISP or OpenCTI"
echo "-- the alert is marked no_forward and H2: it does not leave tfshare without an explicit flag:"
expect_reject $TFSHARE export "$ALERT_ID" --format stix "${NGO[@]}"
echo "-- with the originator's consent (--allow-restricted), its markings travel with it:"
run $TFSHARE export "$ALERT_ID" --format stix --allow-restricted --out "$OUT/alert.stix.json" "${NGO[@]}"
python3 - "$OUT/alert.stix.json" <<'PY'
import json, sys
objects = json.load(open(sys.argv[1]))["objects"]
names = {o["id"]: o.get("name") for o in objects if o["type"] == "marking-definition"}
report = next(o for o in objects if o["type"] == "report")
print("report  ", report["name"])
print("markings", ", ".join(names[m] for m in report["object_marking_refs"]))
print("points to msg_id", report["external_references"][0]["external_id"])
PY
echo "-- checked by the OASIS validator (-d 103: derived ids are UUIDv5, a SHOULD for UUIDv4):"
run stix2_validator --version 2.1 -d 103 "$OUT/alert.stix.json"

step "Done: messages signed, encrypted and delivered live; forgeries, tampering and replays refused; every message and receipt in a tamper-evident log, provable offline; an epoch-mode channel re-keyed when a member was removed; an alert handed to the analysts' platforms as valid STIX 2.1, its handling with it."
