#!/usr/bin/env python3
"""The ledger look-up as a prepared statement, its time over 150 batches of
1,000 messages (dense: 10,000/s): old layout (part = ANY), V20 with the
look-up as a join (`newjoin`), V20 with one index scan per range (LATERAL ..
OFFSET 0, `new`, as sql.rs has it). A join's generic plan degrades as the
ledger grows; the LATERAL form stays flat.

    python seen_plan.py RATE LAYOUT      (e.g. 10000 newjoin)
"""
import sinkbench as sb, psycopg, time, statistics, sys
sb.S = S = "sinkexp_d"
rate = int(sys.argv[1]); layout = sys.argv[2]
admin = psycopg.connect(sb.DSN)
admin.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE"); admin.execute(f"CREATE SCHEMA {S}"); admin.execute(f"CREATE TABLE {S}.batches (id bigserial PRIMARY KEY)"); admin.commit()
sb.setup_receipts_old(admin)
if layout.startswith("new"): sb.migrate_v20(admin)
bs = sb.make_batches(sb.rows_text(150000), 1000, 1, rate, layout[:3])
rec = (sb.RECORD_NEW if layout.startswith("new") else sb.RECORD_OLD).replace("sinkexp.", f"{S}.")
seen = ((sb.SEEN_NEW_JOIN if layout == "newjoin" else sb.SEEN_NEW) if layout.startswith("new") else sb.SEEN_OLD).replace("sinkexp.", f"{S}.")
conn = psycopg.connect(sb.DSN); conn.prepare_threshold = 0
cur = conn.cursor(); cur.execute("SET synchronous_commit = off"); cur.execute("SET enable_seqscan = off"); conn.commit()
ts = []
for b in bs:
    L = b["ledger"]; p = dict(L, parts=L["seen_parts"], lasts=L["seen_lasts"]) if layout.startswith("new") else L
    cur.execute(f"SELECT nextval('{S}.batches_id_seq')", prepare=True)
    t = time.perf_counter(); cur.execute(seen, p, prepare=True); cur.fetchall(); ts.append(time.perf_counter() - t)
    cur.execute(rec, L, prepare=True)
    conn.commit()
print(layout, rate, "seen ms: first 10 median %.3f, last 100 median %.3f" % (statistics.median(ts[:10])*1000, statistics.median(ts[-100:])*1000))
# the same statement text, server-side timing of the last one
L = bs[-1]["ledger"]; p = dict(L, parts=L["seen_parts"], lasts=L["seen_lasts"]) if layout.startswith("new") else L
for mode in ("force_custom_plan", "force_generic_plan"):
    cur.execute(f"SET plan_cache_mode = {mode}")
    cur.execute("EXPLAIN (ANALYZE, SUMMARY) " + seen, p)
    lines = [r[0] for r in cur.fetchall()]
    print("   ", mode, lines[-2], "|", lines[-1])
conn.rollback()
admin.execute(f"DROP SCHEMA {S} CASCADE"); admin.commit()
