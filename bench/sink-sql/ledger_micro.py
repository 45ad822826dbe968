#!/usr/bin/env python3
"""The ledger's statements alone (lock, seen, record; no rows), old layout
against V20, trickle (100 msgs/s: a partition per message) and dense
(10,000 msgs/s), 1,000 messages a batch: ms per batch on one connection,
synchronous_commit off for this session (the WAL flush is measured in the
end-to-end runs; here only the statements). Rounds alternate old/new.

    python ledger_micro.py   (env: BATCHES, default 300)
"""
import os, time, statistics
import psycopg
import sinkbench as sb

BATCHES = int(os.environ.get("BATCHES", "300"))
sb.S = S = "sinkexp_l"


def one(admin, layout, rate):
    conn = admin
    conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE; CREATE SCHEMA {S}; CREATE TABLE {S}.batches (id bigserial PRIMARY KEY)")
    conn.commit()
    sb.setup_receipts_old(conn)
    if layout == "new":
        sb.migrate_v20(conn)
    bs = sb.make_batches(sb.rows_text(BATCHES * 1000), 1000, 1, rate, layout)
    rec = (sb.RECORD_NEW if layout == "new" else sb.RECORD_OLD).replace("sinkexp.", f"{S}.")
    seen = (sb.SEEN_NEW if layout == "new" else sb.SEEN_OLD).replace("sinkexp.", f"{S}.")
    lock = sb.LOCK
    conn = psycopg.connect(sb.DSN)
    conn.prepare_threshold = 0
    cur = conn.cursor()
    cur.execute("SET synchronous_commit = off"); conn.commit()
    t = time.perf_counter()
    for b in bs:
        L = b["ledger"]
        p = dict(L, parts=L["seen_parts"], lasts=L["seen_lasts"]) if layout == "new" else L
        with conn.pipeline():
            cur.execute(f"SELECT nextval('{S}.batches_id_seq')", prepare=True)
            cur.execute(lock, (sb.PIPE,), prepare=True)
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cur.execute(seen, p, prepare=True)
            cur.execute(rec, L, prepare=True)
        conn.commit()
    el = (time.perf_counter() - t) / len(bs) * 1000
    rows, size = conn.execute(f"SELECT count(*), pg_total_relation_size('{S}.receipts') FROM {S}.receipts").fetchone()
    # a redelivery of batch 7 must be found whole
    L = bs[7]["ledger"]
    p = dict(L, parts=L["seen_parts"], lasts=L["seen_lasts"]) if layout == "new" else L
    found = len(conn.execute(seen, p).fetchall()); conn.rollback(); conn.close()
    return el, rows, size, found


def main():
    conn = psycopg.connect(sb.DSN)
    res = {}
    for rnd in range(2):
        for rate in (100, 10000):
            for layout in (("old", "new") if rnd == 0 else ("new", "old")):
                el, rows, size, found = one(conn, layout, rate)
                res.setdefault((rate, layout), []).append(el)
                print(f"round {rnd} {'trickle 100/s' if rate == 100 else 'dense 10,000/s':<15} {layout}: {el:6.2f} ms/batch, "
                      f"ledger rows {rows}, {size / 1024:.0f} kB, redelivery of a batch found {found}/1000", flush=True)
    conn.execute(f"DROP SCHEMA {S} CASCADE"); conn.commit()


if __name__ == "__main__":
    main()
