#!/usr/bin/env python3
"""The ledger constants exactly as host/src/sink/sql.rs has them (read from the
file, $n parameters, prepared as tokio-postgres does) against a scratch
database migrated V1..V20 from migrations/: record, seen (redelivery found,
new id not), the span cap, a row written without span, pruning. Run from
the repository root; creates and drops database sinkexp_db."""
import re, subprocess, psycopg, uuid
src = open("host/src/sink/sql.rs").read()
def const(name):
    m = re.search(r'pub const %s: &str =\s*"((?:[^"\\]|\\.)*)";' % name, src, re.S)
    s = m.group(1)
    s = re.sub(r'\\\n\s*', '', s)  # Rust line continuation
    return s.replace('\\"', '"')
SEEN, RECORD, PRUNE, LOCK = const("LEDGER_SEEN"), const("LEDGER_RECORD"), const("LEDGER_PRUNE"), const("LEDGER_LOCK")
print(SEEN); print(RECORD); print(PRUNE)
admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True)
admin.execute("DROP DATABASE IF EXISTS sinkexp_db"); admin.execute("CREATE DATABASE sinkexp_db")
db = psycopg.connect("host=127.0.0.1 user=postgres dbname=sinkexp_db", autocommit=True)
import glob
files = sorted(glob.glob("migrations/V*.sql"), key=lambda f: int(re.match(r"migrations/V(\d+)__", f).group(1)))
for f in files:
    db.execute(open(f).read())
print("migrated:", [f.split("/")[1] for f in files][-3:])
# use libpq-level prepared statements with $n, as tokio-postgres does
pg = db.pgconn
def prep(name, sql):
    r = pg.prepare(name.encode(), sql.encode()); assert r.status == 1, r.error_message
for n, s in [("seen", SEEN), ("rec", RECORD), ("prune", PRUNE)]:
    prep(n, s)
def arr(xs): return ("{" + ",".join(str(x) for x in xs) + "}").encode()
def run(name, params):
    r = pg.exec_prepared(name.encode(), [p if isinstance(p, bytes) or p is None else str(p).encode() for p in params])
    assert r.status in (1, 2), r.error_message
    return [r.get_value(i, 0).decode() for i in range(r.ntuples)]
db.autocommit = False
# a trickle batch, as LedgerIds would give it: 3 rows
u = [str(uuid.UUID(int=i)) for i in range(1000)]
first = 179500000000
parts, lasts = [first, first + 480, first + 960], [first + 479, first + 959, first + 999]
db.execute("INSERT INTO etl.batches (pipeline, source, messages, rows_written, dead_letters, plugins) VALUES ('p','s',0,0,0,'[]')")
run("rec", ["p", arr(parts), arr(lasts), b"{}", arr(u), arr([1,1,1]), arr([0,0,0]), arr([1,481,961]), arr([480,960,1000])])
db.commit()
print(db.execute("SELECT part, span, last_part, cardinality(message_uuids) FROM etl.receipts ORDER BY part").fetchall())
# a redelivery of ids 500 and 999 and a new one, with a legacy-partition text id
found = run("seen", ["p", arr([-9223372036854775808, first + 499 - 1000]), arr([-9223372036854775808, first + 499]), arr([-9223372036854775808, first + 999]), b"{dead-letter:1}", arr([u[500], u[999], str(uuid.UUID(int=5000))])])
print("seen:", found)
db.rollback()
# the cap is enforced
try:
    run("rec", ["p", arr([0]), arr([1001]), b"{x}", b"{}", arr([1]), arr([1]), arr([1]), arr([0])])
    print("NOT ENFORCED")
except AssertionError as e:
    print("cap enforced:", e.args[0][:80]); db.rollback()
# a row written the old way (no span) is found, and pruning keeps rows reaching past the cutoff
db.execute("INSERT INTO etl.receipts (pipeline, part, batch_id, message_ids) VALUES ('p', 5, 0, ARRAY['old-way'])")
db.commit()
print("old-way row seen:", run("seen", ["p", arr([-9223372036854775808, 5 - 1000]), arr([-9223372036854775808, 5]), arr([-9223372036854775808, 5]), b"{old-way}", b"{}"]))
db.rollback()
r = pg.exec_prepared(b"prune", [b"p", str(first + 500).encode()]); print("pruned rows (cutoff inside the second row):", r.command_tuples)
print(db.execute("SELECT part, last_part FROM etl.receipts ORDER BY part").fetchall())
db.rollback(); db.close()
admin.execute("DROP DATABASE sinkexp_db")
