"""WAL frames between two offsets of a WAL, attributed to tables (see wal-pages.sh).

usage: wal_pages.py DB W0 W1 EVENTS   (DB with DB-wal beside it; offsets in bytes)
"""
import collections
import sqlite3
import struct
import sys

db, w0, w1, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
wal = open(db + "-wal", "rb").read()
page_size = struct.unpack(">I", wal[8:12])[0]
frame = 24 + page_size
start = 32 + ((max(w0, 32) - 32) // frame) * frame
end = 32 + ((w1 - 32) // frame) * frame
# dbstat reads the WAL too, so pages allocated during the window are named.
names = {pg: name for name, pg in sqlite3.connect(db).execute("SELECT name, pageno FROM dbstat")}
frames = collections.Counter()  # frames per table
per_commit = collections.Counter()  # distinct pages per table, summed over commits
commits, pages = 0, set()
for off in range(start, end, frame):
    page, db_size = struct.unpack(">II", wal[off:off + 8])
    frames[names.get(page, "?")] += 1
    pages.add(page)
    if db_size:  # the last frame of a commit carries the database size
        commits += 1
        for p in pages:
            per_commit[names.get(p, "?")] += 1
        pages = set()
n = sum(frames.values())
print(f"{n} frames, {commits} commits, {events} events in the window: "
      f"{n / max(commits, 1):.1f} frames per commit, {events / max(commits, 1):.1f} events per commit, "
      f"{n / max(events, 1):.2f} frames ({n * frame / 1024 / max(events, 1):.2f} KB) per event")
print(f"{'table or index':<24} {'frames':>8} {'share':>6} {'pages/commit':>13}")
for name, k in frames.most_common():
    print(f"{name:<24} {k:>8} {100 * k / n:>5.1f}% {per_commit[name] / max(commits, 1):>13.2f}")
