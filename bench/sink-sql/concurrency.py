#!/usr/bin/env python3
"""Two committers of the same new key, each in its own transaction, the
second starting its statement before the first commits: which forms of the
merge fail? (PostgreSQL 15, READ COMMITTED, as the sink runs.)"""
import threading, time
import psycopg

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
S = "sinkexp_c"
FORMS = {
    "INSERT .. ON CONFLICT DO UPDATE": "INSERT INTO {S}.t (k, v) VALUES (1, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
    "MERGE": "MERGE INTO {S}.t t USING (SELECT 1 AS k, %s AS v) s ON t.k = s.k "
             "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (k, v) VALUES (s.k, s.v)",
    "UPDATE .. FROM; INSERT .. WHERE NOT EXISTS": "WITH s AS (SELECT 1 AS k, %s AS v), "
             "u AS (UPDATE {S}.t t SET v = s.v FROM s WHERE t.k = s.k) "
             "INSERT INTO {S}.t (k, v) SELECT k, v FROM s WHERE NOT EXISTS (SELECT 1 FROM {S}.t t WHERE t.k = s.k)",
}


def main():
    admin = psycopg.connect(DSN, autocommit=True)
    for name, stmt in FORMS.items():
        admin.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE; CREATE SCHEMA {S}; CREATE TABLE {S}.t (k int PRIMARY KEY, v text)")
        a = psycopg.connect(DSN); b = psycopg.connect(DSN)
        a.execute(stmt.format(S=S), ("a",))          # a holds its insert, uncommitted
        out = {}
        def second():
            try:
                b.execute(stmt.format(S=S), ("b",)); b.commit(); out["b"] = "ok"
            except psycopg.Error as e:
                out["b"] = f"{e.sqlstate} {e.diag.message_primary}"; b.rollback()
        th = threading.Thread(target=second); th.start()
        time.sleep(0.3); a.commit(); th.join()
        v = admin.execute(f"SELECT v FROM {S}.t").fetchall()
        print(f"{name:<45} second committer: {out['b']:<70} table: {v}")
        a.close(); b.close()
    admin.execute(f"DROP SCHEMA {S} CASCADE")


if __name__ == "__main__":
    main()
