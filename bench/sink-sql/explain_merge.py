#!/usr/bin/env python3
"""EXPLAIN (ANALYZE, BUFFERS, WAL) of one 1,000-row merge of every form over
a table holding every key (100,000 rows): where the statement's time goes."""
import sys
import psycopg
import sinkbench as sb

sb.S = S = "sinkexp_e"
lines = sb.rows_text(100000)
admin = psycopg.connect(sb.DSN)
admin.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE"); admin.execute(f"CREATE SCHEMA {S}")
admin.execute(f"CREATE TABLE {S}.user_logins(user_id varchar(128), device_type varchar(32), masked_ip varchar(256), "
              "masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date)")
admin.commit()
for kind in (sys.argv[1:] or ["onconflict", "merge", "update_insert"]):
    tgt = sb.fresh_target(admin, "t", True, filled_with=lines)
    for i, start in enumerate((5000, 50000)):
        cur = admin.cursor()
        cur.execute(sb.create_staging(tgt))
        with cur.copy(f'COPY "etl_stage_t" ({sb.CL}, "_etl_seq") FROM STDIN') as cp:
            cp.write(b"".join(l[:-1] + b"\t%d\n" % j for j, l in enumerate(lines[start:start + 1000])))
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) " + sb.merge_sql(kind, tgt))
        plan = [r[0] for r in cur.fetchall()]
        if i == 1:
            print(f"== {kind}")
            print("\n".join(plan))
        admin.commit()
admin.execute(f"DROP SCHEMA {S} CASCADE"); admin.commit()
