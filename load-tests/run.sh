#!/usr/bin/env bash
# Runs one load-test scenario against the echo floor and the Beckon gateway, one after
# the other on this machine, with the same generator and load, and prints the comparison.
#
#   load-tests/run.sh SCENARIO [--quick] [--no-fsync] [--durable-floor] [--only floor|gateway]
#
# SCENARIO is a file name in load-tests/scenarios/ without .env: connect-idle,
# steady-events, handshake-rate, reconnect-storm. --quick uses the scenario's small
# sizes (a smoke: does the harness work). --no-fsync runs the gateway with
# scenarios/no-fsync.toml. --durable-floor runs the floor with --durable: each event is
# made durable (appended, group commit with fdatasync) before its ok, the least a gateway
# that acknowledges only durable events must do. Results: load-tests/results/<stamp>-<scenario>[-quick]/
# {floor,gateway}.json and compare.md; the comparison is also appended to
# load-tests/results/history.md.
#
# Environment: BECKON_LT_NO_BUILD=1 skips the cargo build; BECKON_LT_PORT picks the
# gateway port (floor = port + 1; default: a random port in 20000-29999);
# BECKON_LT_SESSIONS and BECKON_LT_ARGS replace the scenario's SESSIONS and ARGS;
# BECKON_LT_CAMPAIGNS replaces CAMPAIGNS (active campaigns put before the run, 0: none).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] && [ "$1" != -h ] && [ "$1" != --help ] || usage
scenario="$1"; shift
quick=0; fsync_cfg=""; only=""; durable_floor=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-fsync) fsync_cfg="$here/scenarios/no-fsync.toml" ;;
    --only) only="$2"; shift ;;
    --durable-floor) durable_floor=1 ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
  shift
done
file="$here/scenarios/$scenario.env"
[ -f "$file" ] || { echo "no scenario $scenario (see $here/scenarios/)" >&2; exit 2; }
# shellcheck disable=SC1090
. "$file"
if [ "$quick" = 1 ]; then
  SESSIONS="$QUICK_SESSIONS"; PROCS="$QUICK_PROCS"; ARGS="$QUICK_ARGS"
fi
# Overrides for one-off runs, e.g. BECKON_LT_ARGS="--rates 10000 --keep-going".
SESSIONS="${BECKON_LT_SESSIONS:-$SESSIONS}"
ARGS="${BECKON_LT_ARGS:-$ARGS}"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release"
if [ "${BECKON_LT_NO_BUILD:-0}" != 1 ]; then
  # One cargo at a time on this machine (another build may share the repository).
  (cd "$root" && cargo build --release --quiet -p beckon-loadgen -p beckon-echo-floor)
  (cd "$root" && cargo build --release --quiet --bin beckon)
fi

port="${BECKON_LT_PORT:-$((20000 + RANDOM % 10000))}"
fport=$((port + 1))
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
suffix=""; [ "$quick" = 1 ] && suffix="-quick"; [ -n "$fsync_cfg" ] && suffix="$suffix-nofsync"
[ "$durable_floor" = 1 ] && suffix="$suffix-durablefloor"
out="$here/results/$stamp-$scenario$suffix"
mkdir -p "$out"
data_dir="$(mktemp -d /tmp/beckon-lt-data.XXXXXX)"
server_pid=""

stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
cleanup() { stop_server; rm -rf "$data_dir"; }
trap cleanup EXIT

# Tens of thousands of loopback connections left in TIME_WAIT by the previous run (60 s
# each) make the next run's connects collide with them and retry after a second: the
# outliers of 1,000–3,700 handshakes/s with 0.2–0.8 s p99s seen back to back. Wait for
# them to clear before each measured run.
wait_timewait() {
  local n
  [ "$quick" = 1 ] && return 0 # the smoke checks the harness, not figures
  for _ in $(seq 1 70); do
    n=$(ss -Htan state time-wait 2>/dev/null | wc -l)
    [ "$n" -lt 2000 ] && return 0
    sleep 1
  done
  echo "still $n connections in TIME_WAIT; measuring anyway" >&2
}

wait_port() { # PORT: wait until something accepts on 127.0.0.1:PORT (10 s)
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { echo "server exited during start-up" >&2; return 1; }
    sleep 0.05
  done
  echo "nothing listening on 127.0.0.1:$1" >&2; return 1
}

loadgen() { # MODE URL JSON [extra...]
  local mode="$1" url="$2" json="$3"; shift 3
  # shellcheck disable=SC2086
  "$bin/beckon-loadgen" run --scenario "$SCENARIO" --mode "$mode" --url "$url" \
    --sessions "$SESSIONS" --procs "$PROCS" --sources "$SOURCES" \
    --pid "$server_pid" --json "$json" --label "$stamp$suffix" $ARGS "$@"
}

cmdlog="$out/commands.txt"
: > "$cmdlog"
floor_ok=1; gw_ok=1

# FLOOR_ARGS (a scenario setting): extra floor flags (campaign-publish's --publish: an
# HTTP PUT sends every floor session a message).
# campaign-publish: the campaign the generator publishes once the sessions are up.
[ -n "${PUBLISH_CAMPAIGN:-}" ] && export BECKON_LT_CAMPAIGN="$PUBLISH_CAMPAIGN"

if [ "$only" != gateway ]; then
  wait_timewait
  floor_args="${FLOOR_ARGS:-}"
  # The durable floor's ring file sits beside the gateway's data (the same file system).
  [ "$durable_floor" = 1 ] && floor_args="$floor_args --durable $data_dir/floor-ring.log"
  echo "== floor: beckon-echo-floor on 127.0.0.1:$fport${floor_args:+ ($floor_args)}"
  echo "$bin/beckon-echo-floor --listen 127.0.0.1:$fport $floor_args" >> "$cmdlog"
  # shellcheck disable=SC2086
  "$bin/beckon-echo-floor" --listen "127.0.0.1:$fport" $floor_args 2> "$out/floor.log" &
  server_pid=$!
  wait_port "$fport"
  strict=""; [ "$quick" = 1 ] && strict="--strict"
  echo "beckon-loadgen run --scenario $SCENARIO --mode echo --url ws://127.0.0.1:$fport/v1/ws --sessions $SESSIONS --procs $PROCS --sources $SOURCES --pid <floor> $ARGS $strict" >> "$cmdlog"
  loadgen echo "ws://127.0.0.1:$fport/v1/ws" "$out/floor.json" $strict 2>&1 | tee "$out/floor.txt" || floor_ok=0
  stop_server
  rm -f "$data_dir/floor-ring.log"
fi

if [ "$only" != floor ]; then
  wait_timewait
  # GATEWAY_DEV=no (a scenario setting): the same secrets as --dev but none of its seeded
  # example campaigns (one of them arms a session-duration timer in every session).
  mode_args=(--dev)
  [ "${GATEWAY_DEV:-yes}" = no ] && mode_args=(--jwt-secret beckon-dev-secret-NOT-FOR-PRODUCTION --admin-token beckon-dev-admin)
  echo "== gateway: beckon serve ${mode_args[0]} on 127.0.0.1:$port${fsync_cfg:+ (fsync off)}"
  cfg_args=(); [ -n "$fsync_cfg" ] && cfg_args=(--config "$fsync_cfg")
  echo "RUST_LOG=warn $bin/beckon serve ${mode_args[*]} --listen 127.0.0.1:$port --data-dir $data_dir ${cfg_args[*]:-}" >> "$cmdlog"
  RUST_LOG="${RUST_LOG:-warn}" "$bin/beckon" serve "${mode_args[@]}" --listen "127.0.0.1:$port" \
    --data-dir "$data_dir" "${cfg_args[@]}" > "$out/gateway.log" 2>&1 &
  server_pid=$!
  wait_port "$port"
  if [ -n "${CAMPAIGN:-}" ]; then
    # The scenario's campaign (e.g. one event trigger) so trigger events produce messages.
    echo "curl -X PUT -H 'Authorization: Bearer beckon-dev-admin' http://127.0.0.1:$port/v1/campaigns/lt-campaign -d '$CAMPAIGN'" >> "$cmdlog"
    curl -sf -X PUT -H 'Authorization: Bearer beckon-dev-admin' -H 'content-type: application/json' \
      "http://127.0.0.1:$port/v1/campaigns/lt-campaign" -d "$CAMPAIGN" > /dev/null
  fi
  n_extra="${BECKON_LT_CAMPAIGNS:-${CAMPAIGNS:-0}}"
  if [ "$n_extra" -gt 0 ]; then
    # EXTRA campaigns (CAMPAIGNS, a scenario setting; BECKON_LT_CAMPAIGNS overrides): the
    # engine's 1,000-campaign shape (as in benches/engine.rs's event_1k group). Event
    # triggers over N/10 event names, 10 per name; the 10 on the generator's plain event
    # (lt_event) are evaluated for every such event and never deliver (their property
    # filter wants plan "enterprise", the generator sends "pro"); the others listen to
    # names nobody sends. All PUT over one keep-alive connection (curl -K).
    extra_cfg="$out/campaigns.curl"
    : > "$extra_cfg"
    for i in $(seq 0 $((n_extra - 1))); do
      ev="lt_x$((i % (n_extra / 10)))"; [ "$((i % (n_extra / 10)))" = 0 ] && ev=lt_event
      body='{"status":"active","trigger":{"type":"event","event":"EV","where":{"prop":"plan","op":"eq","value":"enterprise"}},"audience":{"conditions":{"attr":"tier","op":"in","value":["gold","silver"]}},"frequency":{"max_per_user":1},"variants":[{"id":"a","message":{"kind":"banner","body":"extra"}}]}'
      body="${body/EV/$ev}"; body="${body//\"/\\\"}"   # quotes escaped for curl's config
      [ "$i" -gt 0 ] && echo next >> "$extra_cfg"
      printf 'url = "http://127.0.0.1:%s/v1/campaigns/lt-x%s"\nrequest = "PUT"\nheader = "Authorization: Bearer beckon-dev-admin"\nheader = "content-type: application/json"\nfail\nsilent\nshow-error\noutput = "/dev/null"\ndata = "%s"\n' \
        "$port" "$i" "$body" >> "$extra_cfg"
    done
    echo "curl -K $extra_cfg   # $n_extra extra campaigns" >> "$cmdlog"
    t0=$(date +%s%N)
    curl -K "$extra_cfg"
    echo "== $n_extra extra campaigns put in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  fi
  echo "beckon-loadgen run --scenario $SCENARIO --mode beckon --url ws://127.0.0.1:$port/v1/ws --sessions $SESSIONS --procs $PROCS --sources $SOURCES --pid <gateway> $ARGS" >> "$cmdlog"
  # The publish scenario checks the gateway too in the quick (CI) run: every session
  # must get its message.
  gw_strict=""; [ "$quick" = 1 ] && [ -n "${PUBLISH_CAMPAIGN:-}" ] && gw_strict="--strict"
  loadgen beckon "ws://127.0.0.1:$port/v1/ws" "$out/gateway.json" $gw_strict 2>&1 | tee "$out/gateway.txt" || gw_ok=0
  stop_server
fi

if [ -f "$out/gateway.json" ] && [ -f "$out/floor.json" ]; then
  "$bin/beckon-loadgen" compare "$out/gateway.json" "$out/floor.json" > "$out/compare.md"
  echo
  cat "$out/compare.md"
  {
    echo
    echo "### $stamp $scenario$suffix ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores)"
    echo
    cat "$out/compare.md"
  } >> "$here/results/history.md"
fi
echo "results in $out"
[ "$floor_ok" = 1 ] || { echo "the floor run failed" >&2; exit 1; }
[ "$gw_ok" = 1 ] || { echo "the gateway run failed" >&2; exit 1; }
