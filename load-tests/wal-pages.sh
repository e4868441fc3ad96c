#!/usr/bin/env bash
# Where the store's writes go: runs trigger-heavy against the gateway alone at one rate,
# pins the WAL with a reader for 8 s of the run (so it cannot start over), then counts
# the WAL frames written in those 8 s, per commit and per event, and which table or
# index each page belongs to (SQLite's dbstat, via python3's sqlite3 module).
#
#   load-tests/wal-pages.sh [RATE]        (default 5000 events/s; needs python3)
#
# Uses the release binaries already built (CARGO_TARGET_DIR respected); the gateway runs
# with store.wal_limit_mb = 100000 so that no WAL restart falls in the window.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rate="${1:-5000}"
work="$(mktemp -d /tmp/beckon-wal-pages.XXXXXX)"
trap 'rm -rf "$work"' EXIT
printf '[store]\nwal_limit_mb = 100000\n' > "$work/config.toml"
port=$((20000 + RANDOM % 10000))
BECKON_CONFIG="$work/config.toml" BECKON_LT_NO_BUILD=1 BECKON_LT_PORT=$port \
  BECKON_LT_ARGS="--concurrency 64 --rates $rate --duration-s 20 --warmup-s 5 --grace-s 2 --max-p99-ms 10 --threads 1 --trigger-share 0.2 --keep-going" \
  "$here/run.sh" trigger-heavy --only gateway > "$work/run.log" 2>&1 &
run=$!
pid=""
for _ in $(seq 1 600); do
  pid=$(pgrep -f "beckon serve.*127.0.0.1:$port" | head -1 || true)
  [ -n "$pid" ] && break; sleep 0.5
done
[ -n "$pid" ] || { echo "the gateway did not start" >&2; cat "$work/run.log" >&2; exit 1; }
dir=$(tr '\0' ' ' < "/proc/$pid/cmdline" | grep -o -- '--data-dir [^ ]*' | cut -d' ' -f2)
metric() { curl -s "127.0.0.1:$port/metrics" | awk -v m="$1" 'index($1, m) == 1 {s += $2} END {print s + 0}'; }
for _ in $(seq 1 300); do [ "$(metric beckon_events_total)" -gt 30000 ] && break; sleep 1; done
python3 -c "
import sqlite3, time
c = sqlite3.connect('$dir/beckon.sqlite3', isolation_level=None)
c.execute('BEGIN'); c.execute('SELECT count(*) FROM definitions').fetchall()
time.sleep(20)
" &
reader=$!
sleep 1
w0=$(stat -c %s "$dir/beckon.sqlite3-wal"); e0=$(metric beckon_events_total)
sleep 8
w1=$(stat -c %s "$dir/beckon.sqlite3-wal"); e1=$(metric beckon_events_total)
cp "$dir/beckon.sqlite3-wal" "$work/db-wal"; cp "$dir/beckon.sqlite3" "$work/db"
kill "$reader" 2>/dev/null || true
wait "$run" || true
grep -E "^step" "$work/run.log" || true
python3 "$here/wal_pages.py" "$work/db" "$w0" "$w1" $((e1 - e0))
