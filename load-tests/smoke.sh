#!/usr/bin/env bash
# CI smoke for the load-test harness: every scenario with --quick (small N) against the
# floor (strict: nothing may fail) and the gateway. It checks that the harness works,
# not absolute numbers; it exits non-zero when a run fails. Well under two minutes once
# built.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
start=$(date +%s)
(cd "$root" && cargo build --release --quiet -p beckon-loadgen -p beckon-echo-floor)
(cd "$root" && cargo build --release --quiet --bin beckon)
built=$(date +%s)
failed=()
for s in connect-idle handshake-rate steady-events trigger-heavy reconnect-storm campaign-publish; do
  echo "=== smoke: $s"
  BECKON_LT_NO_BUILD=1 "$here/run.sh" "$s" --quick || failed+=("$s")
done
echo "=== smoke: trigger-heavy, the durable floor"
BECKON_LT_NO_BUILD=1 "$here/run.sh" trigger-heavy --quick --durable-floor --only floor ||
  failed+=("trigger-heavy --durable-floor")
end=$(date +%s)
echo "smoke: build $((built - start)) s, scenarios $((end - built)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "smoke FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "smoke OK"
