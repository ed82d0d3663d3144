#!/usr/bin/env bash
# The main job, for real: a release build; the daemon with the production plugins the
# job uses (Debian, OpenStack; never the mock plugins); through the REST API a Debian 12
# base image from conf/examples/debian12-boot-marker.tdl (from this host's own apt
# mirror), then an openstack-kvm qcow2 target image of it; the qcow2 downloaded through
# raw_image; then booted under qemu (TCG, or KVM where the CPU has it) until the marker
# the template's unit prints shows on the serial console.
#
#   bash scripts/demo.sh          the real job (root: the Debian plugin mounts a loop device)
#   bash scripts/demo.sh --mock   the MockOS job, for a machine without qemu or root
#
# Settings (environment): PORT (8075), DEMO_DIR (target/demo), DEMO_ACCEL (tcg or kvm;
# default kvm only when /dev/kvm exists and the CPU shows vmx or svm), DEMO_BOOT_TIMEOUT
# (seconds, 600). Ends with a line starting "demo: booted"; any failure ends with one
# line starting "demo: failed" and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--mock" ]; then
  exec bash scripts/demo/mock.sh
fi
[ $# -eq 0 ] || { echo "usage: bash scripts/demo.sh [--mock]" >&2; exit 2; }

MARKER=IMAGEFACTORY-BOOT-MARKER
TEMPLATE_FILE=conf/examples/debian12-boot-marker.tdl
PORT=${PORT:-8075}
DEMO_DIR=${DEMO_DIR:-target/demo}
BOOT_TIMEOUT=${DEMO_BOOT_TIMEOUT:-600}
START=$(date +%s)

fail() {
  echo "demo: failed: $*" >&2
  exit 1
}
# Seconds since the demo started, for the progress lines.
t() { echo "$(($(date +%s) - START))s"; }

[ "$(id -u)" -eq 0 ] || fail "building a Debian image needs root (loop devices and mounts); run as root, or use --mock"
for tool in cargo curl python3 qemu-img qemu-system-x86_64 mmdebstrap; do
  command -v "$tool" >/dev/null || fail "$tool is not installed: run bash scripts/setup.sh first"
done
if [ -n "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/" 2>/dev/null | grep -v '^000$')" ]; then
  fail "port $PORT is in use; set PORT to a free one"
fi

echo "demo: [$(t)] building imagefactory (release: the daemon, the Debian and OpenStack plugins)"
cargo build --release --quiet -p imagefactory -p debian-os-plugin -p openstack-cloud-plugin \
  || fail "cargo build --release failed (see the compiler's output above)"

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR/plugins" "$DEMO_DIR/storage" "$DEMO_DIR/tmp"
cp target/release/libdebian_os.so target/release/libopenstack_cloud.so "$DEMO_DIR/plugins/"
ABS=$(cd "$DEMO_DIR" && pwd)
cat >"$DEMO_DIR/imagefactory.conf" <<CONF
{
  "plugins": "$ABS/plugins",
  "image_manager_args": {"storage_path": "$ABS/storage"},
  "tmpdir": "$ABS/tmp",
  "target_content": "$(pwd)/conf/target_content.xml",
  "max_concurrent_local_sessions": 2,
  "timeout": 3600
}
CONF

target/release/imagefactoryd --foreground --no_ssl --no_oauth --address 127.0.0.1 --port "$PORT" \
  --config "$DEMO_DIR/imagefactory.conf" >"$DEMO_DIR/daemon.log" 2>&1 &
DAEMON=$!
QEMU=""
cleanup() {
  [ -z "$QEMU" ] || kill "$QEMU" 2>/dev/null || true
  kill "$DAEMON" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
API="http://127.0.0.1:$PORT/imagefactory"
for _ in $(seq 1 100); do curl -sf "$API" >/dev/null && break; sleep 0.1; done
curl -sf "$API" >/dev/null || fail "the daemon did not answer on $API (log: $DEMO_DIR/daemon.log)"
echo "demo: [$(t)] imagefactoryd answers on $API with plugins: $(curl -sf "$API/plugins" \
  | python3 -c 'import json,sys; print(", ".join(p["name"] for p in json.load(sys.stdin)["plugins"]))')"

# json FIELD: reads one field of the JSON object on stdin (a.b for nested ones).
json() { python3 -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1"; }

# post COLLECTION BODY: POSTs a JSON body, prints the new image's id or fails with the
# API's one-line error.
post() {
  local answer code
  answer=$(curl -s -w '\n%{http_code}' -H 'Content-Type: application/json' -d "$2" "$API/$1") \
    || fail "POST $API/$1 did not answer"
  code=$(tail -n 1 <<<"$answer")
  answer=$(sed '$d' <<<"$answer")
  [ "$code" = 202 ] || fail "POST $1 answered $code: $answer"
  json "${1%s}.id" <<<"$answer"
}

# follow COLLECTION ID: prints each change of status, activity and percent until the
# image ends; fails with its one-line error unless it is COMPLETE.
follow() {
  local kind=${1%s} last="" now rec status
  while true; do
    rec=$(curl -sf "$API/$1/$2") || fail "GET $API/$1/$2 failed"
    status=$(json "$kind.status" <<<"$rec")
    now="$status $(json "$kind.percent_complete" <<<"$rec")% $(json "$kind.status_detail.activity" <<<"$rec")"
    if [ "$now" != "$last" ]; then
      echo "demo: [$(t)]   $kind $status $(json "$kind.percent_complete" <<<"$rec")%: $(json "$kind.status_detail.activity" <<<"$rec")"
      last=$now
    fi
    case "$status" in
      COMPLETE) return 0 ;;
      FAILED | DELETED | DELETEFAILED)
        fail "$kind $2 $status: $(json "$kind.status_detail.error" <<<"$rec") (build log: $API/$1/$2/build_log)" ;;
    esac
    sleep 1
  done
}

BODY=$(python3 -c 'import json,sys; print(json.dumps({"base_image": {"template": open(sys.argv[1]).read()}}))' "$TEMPLATE_FILE")
BASE=$(post base_images "$BODY")
echo "demo: [$(t)] base image $BASE: Debian 12 from $TEMPLATE_FILE"
follow base_images "$BASE"

TARGET=$(post target_images "{\"target_image\": {\"base_image_id\": \"$BASE\", \"target\": \"openstack-kvm\"}}")
echo "demo: [$(t)] target image $TARGET: openstack-kvm of $BASE"
follow target_images "$TARGET"

QCOW2="$ABS/$TARGET.qcow2"
curl -sf -o "$QCOW2" "$API/target_images/$TARGET/raw_image" || fail "downloading $API/target_images/$TARGET/raw_image failed"
FORMAT=$(qemu-img info --output=json "$QCOW2" | json format)
[ "$FORMAT" = qcow2 ] || fail "the downloaded target image is $FORMAT, not qcow2"
echo "demo: [$(t)] downloaded $QCOW2 ($(du -h --apparent-size "$QCOW2" | cut -f1) qcow2, virtual $(qemu-img info --output=json "$QCOW2" | json virtual-size) bytes)"

ACCEL=${DEMO_ACCEL:-}
if [ -z "$ACCEL" ]; then
  ACCEL=tcg
  if [ -r /dev/kvm ] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then ACCEL=kvm; fi
fi
SERIAL="$ABS/$TARGET.console.log"
echo "demo: [$(t)] booting it under qemu ($ACCEL); serial console in $SERIAL"
BOOT_START=$(date +%s)
qemu-system-x86_64 -machine "q35,accel=$ACCEL" -m 1024 -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$SERIAL" -drive "file=$QCOW2,format=qcow2,if=virtio,snapshot=on" </dev/null >"$ABS/qemu.log" 2>&1 &
QEMU=$!
while ! grep -q "$MARKER" "$SERIAL" 2>/dev/null; do
  kill -0 "$QEMU" 2>/dev/null || fail "qemu exited before the marker: $(head -c 300 "$ABS/qemu.log") (console: $SERIAL)"
  [ $(($(date +%s) - BOOT_START)) -lt "$BOOT_TIMEOUT" ] \
    || fail "no $MARKER on the serial console within ${BOOT_TIMEOUT}s (console: $SERIAL)"
  sleep 0.5
done
BOOT_TIME=$(($(date +%s) - BOOT_START))
kill "$QEMU" 2>/dev/null || true
wait "$QEMU" 2>/dev/null || true
QEMU=""
CLOUD=$(grep -a -m1 '^cloud-info: ' "$SERIAL" | tr -d '\r' || true)
[ -n "$CLOUD" ] || fail "the image booted but printed no cloud-info: the openstack-kvm changes are not in it (console: $SERIAL)"
echo "demo: [$(t)] base $BASE, target $TARGET; the guest printed \"$CLOUD\""
echo "demo: booted $QCOW2 under $ACCEL in ${BOOT_TIME}s to the marker $MARKER (whole demo $(t))"
