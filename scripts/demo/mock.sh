#!/usr/bin/env bash
# The MockOS demo (`scripts/demo.sh --mock`), for machines without qemu or root: builds
# the workspace, starts the daemon with the mock plugins, builds a MockOS base image
# through the REST API and downloads its (text) body.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --workspace
mkdir -p target/debug/dev-plugins
cp target/debug/libmock_os.so target/debug/libmock_cloud.so target/debug/dev-plugins/
PORT=${PORT:-8075}
target/debug/imagefactoryd --foreground --no_ssl --no_oauth --address 127.0.0.1 --port "$PORT" \
  --config conf/dev.conf >target/demo-daemon.log 2>&1 &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null || true; wait $DAEMON 2>/dev/null || true' EXIT
API="http://127.0.0.1:$PORT/imagefactory"
for _ in $(seq 1 100); do curl -sf "$API" >/dev/null && break; sleep 0.1; done
curl -sf "$API"; echo
TEMPLATE=$(python3 -c 'import json,sys; print(json.dumps({"base_image": {"template": open("conf/examples/mock.tdl").read()}}))')
ID=$(curl -sf -H 'Content-Type: application/json' -d "$TEMPLATE" "$API/base_images" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_image"]["id"])')
echo "base image $ID requested"
for _ in $(seq 1 100); do
  STATUS=$(curl -sf "$API/base_images/$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_image"]["status"])')
  [ "$STATUS" = COMPLETE ] || [ "$STATUS" = FAILED ] && break
  sleep 0.2
done
curl -sf "$API/base_images/$ID"; echo
echo "body: $(curl -sf "$API/base_images/$ID/raw_image")"
[ "$STATUS" = COMPLETE ]
