#!/usr/bin/env python3
"""What the update path cannot go below, and where a commit's WAL goes.

1. All N rows as ONE transaction: COPY into staging + INSERT .. ON CONFLICT
   DO UPDATE over a table holding every key (and the same with MERGE, and
   UPDATE .. FROM): the per-row cost of updating, with no per-batch cost.
2. WAL bytes per 1,000-row batch of append / upsert of new keys / update
   (pg_current_wal_insert_lsn around 20 one-connection commits, ledger
   included): what each commit's flush has to write.
3. The update path into a table with fillfactor 70 (room for HOT updates).

    python ceilings.py     (env: N rows, default 300000)
"""
import os, time
import psycopg
import sinkbench as sb

N = sb.N
S = sb.S


def one_tx_update(admin, lines, kind, plain):
    tgt = sb.fresh_target(admin, "t", True, filled_with=lines)
    staged = b"".join(l[:-1] + b"\t%d\n" % i for i, l in enumerate(lines))
    t = time.perf_counter()
    cur = admin.cursor()
    cur.execute(sb.create_staging(tgt))
    with cur.copy(f'COPY "etl_stage_t" ({sb.CL}, "_etl_seq") FROM STDIN') as cp:
        cp.write(staged)
    cur.execute(sb.merge_sql(kind, tgt))
    admin.commit()
    r = N / (time.perf_counter() - t)
    print(f"{'one transaction, all rows, ' + kind:<58} | {r:>9.0f} | {r / plain:.2f}", flush=True)


def wal_per_batch(admin, lines, mode, fillfactor=None):
    sb.setup_receipts_fresh(admin)
    if mode == "update":
        tgt = sb.fresh_target(admin, "t", True, filled_with=lines)
    else:
        tgt = sb.fresh_target(admin, "t", mode == "upsert")
    if fillfactor:
        admin.execute(f"ALTER TABLE {tgt} SET (fillfactor = {fillfactor})"); admin.commit()
        if mode == "update":
            admin.execute(f"TRUNCATE {tgt}"); admin.commit()
            with admin.cursor().copy(f"COPY {tgt} ({sb.CL}) FROM STDIN") as cp:
                cp.write(b"".join(lines))
            admin.commit()
            admin.autocommit = True; admin.execute(f"VACUUM ANALYZE {tgt}"); admin.autocommit = False
    bs = sb.make_batches(lines[:20000], 1000, 1, 10000, "old")
    c = sb.Committer(mode, tgt, "old")
    with psycopg.connect(sb.DSN) as conn:
        conn.prepare_threshold = 0
        start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]; conn.commit()
        t = time.perf_counter()
        for b in bs:
            c.commit(conn, [b])
        el = time.perf_counter() - t
        end = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        wal = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0]; conn.commit()
        hot = conn.execute(f"SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass", (tgt,)).fetchone()
    ff = f", fillfactor {fillfactor}" if fillfactor else ""
    print(f"{mode + ff:<32} | WAL/batch {float(wal) / len(bs) / 1024:8.0f} kB | {el / len(bs) * 1000:6.2f} ms/commit (1 connection)", flush=True)


def main():
    lines = sb.rows_text(N)
    admin = psycopg.connect(sb.DSN)
    sb.setup(admin)
    plain = sb.plain_copy(admin, lines)
    print(f"# N={N}")
    print(f"{'plain COPY (one transaction)':<58} | {plain:>9.0f} | 1.00", flush=True)
    for kind in ["onconflict", "merge", "update_insert"]:
        one_tx_update(admin, lines, kind, plain)
    for mode in ["append", "upsert", "update"]:
        wal_per_batch(admin, lines, mode)
    wal_per_batch(admin, lines, "update", fillfactor=70)
    # the update path, two in flight, into a fillfactor-70 table
    sb.setup_receipts_fresh(admin)
    tgt = sb.fresh_target(admin, "t", True)
    admin.execute(f"ALTER TABLE {tgt} SET (fillfactor = 70)"); admin.commit()
    with admin.cursor().copy(f"COPY {tgt} ({sb.CL}) FROM STDIN") as cp:
        cp.write(b"".join(lines))
    admin.commit()
    admin.autocommit = True; admin.execute(f"VACUUM ANALYZE {tgt}"); admin.autocommit = False
    r = sb.through(sb.Committer("update", tgt, "old"), sb.make_batches(lines, 1000, 1, 10000, "old"))
    print(f"{'update:1000:10000:old into fillfactor 70':<58} | {r:>9.0f} | {r / plain:.2f}", flush=True)
    admin.execute(f"DROP SCHEMA {S} CASCADE"); admin.commit()


if __name__ == "__main__":
    main()
