#!/usr/bin/env bash
# Runs every check and test of the project, in order:
#   1. Rust: formatting, clippy (warnings are errors), unit + integration + process tests
#   2. client-js: typecheck + unit tests, build (with the size budget)
#   3. client-js under Node against a real `beckon` process
#   4. client-js in real headless Chromium against a real `beckon` process
#   5. the demo app and dashboard (web/): build, unit tests, Chromium tests against the
#      same gateway (screenshots in test-artifacts/)
#   6. the load-test harness smoke
# Needs: cargo, node + npm, /usr/bin/chromium (see README "Running the tests").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# Incremental artefacts only help an edit-compile loop; here they cost GBs of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== rust: fmt, clippy, tests"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# `cargo test` built target/debug/beckon for the process tests, with the test run's
# features. A separate `cargo build` would resolve features without the dev-dependencies
# and compile every dependency a second time.
[ -x target/debug/beckon ] || { echo "cargo test did not build target/debug/beckon"; exit 1; }

echo "== client-js: unit tests and build"
cd "$root/client-js"
npm ci --no-audit --no-fund --loglevel=error
npm test
npm run build

echo "== client-js against a real gateway (Node, then Chromium)"
data=$(mktemp -d)
"$root/target/debug/beckon" serve --dev --listen 127.0.0.1:0 --data-dir "$data/store" --log-format json 2>"$data/log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -o '"addr":"[^"]*"' "$data/log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "beckon did not start:"; cat "$data/log"; exit 1; }
export BECKON_URL="http://$addr" BECKON_BIN="$root/target/debug/beckon" BECKON_ADMIN_TOKEN=beckon-dev-admin
# BECKON_ADMIN_TOKEN lets the SDK tests create campaigns on the dev gateway.
npm run test:node
npm run test:e2e

echo "== web: demo app and dashboard"
cd "$root/web"
npm ci --no-audit --no-fund --loglevel=error
npm run build
# The gateway embeds the committed build; say so if it is stale (the tests use the fresh one).
git -C "$root" diff --quiet -- src/http/assets || echo "warning: src/http/assets differs from a fresh web build: commit it"
npm test

if [ -x "$root/load-tests/smoke.sh" ]; then
  echo "== load-test harness smoke"
  "$root/load-tests/smoke.sh"
fi
echo "== all tests passed"
