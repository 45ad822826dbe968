-- A ledger row may cover a run of partitions: `part` to `last_part`
-- (= part + span), at most 1,000 partitions (10 s of sent time) wide. A
-- trickle (100 messages/s: every message in a 10 ms partition of its own)
-- wrote one row per message, and its look-up probed one partition per
-- message; now a batch writes a row per run of partitions of up to 480 ids
-- (kept inline, see V9): 3 rows for 1,000 such messages instead of 1,000.
-- A look-up for partitions lo..hi reads the rows with part between
-- lo - 1000 and hi whose last_part >= lo: a redelivered message (same sent
-- time, so same partition p) was recorded in a row with part <= p <=
-- last_part and last_part - part <= 1000, which that range always holds.
-- The cap is checked here, so no writer can record a row a look-up would
-- miss; widening it needs a migration, narrowing it must first wait until
-- wider rows are pruned.
--
-- `span` has a default of 0, so rows written without it (before this
-- migration, or by a host not yet upgraded) cover their own partition, as
-- they always did; `last_part` is computed by the server. The legacy
-- partition (i64::MIN) only ever has span 0.
ALTER TABLE etl.receipts ADD COLUMN IF NOT EXISTS span integer NOT NULL DEFAULT 0
    CONSTRAINT receipts_span_capped CHECK (span BETWEEN 0 AND 1000);
ALTER TABLE etl.receipts ADD COLUMN IF NOT EXISTS last_part bigint GENERATED ALWAYS AS (part + span) STORED;
-- The pipeline first: a look-up is a range of partitions of one pipeline,
-- and last_part in the key filters that range in the index, without
-- visiting rows that end before it. Pruning (part < cutoff) uses it too.
CREATE INDEX IF NOT EXISTS receipts_span ON etl.receipts (pipeline, part, last_part);
DROP INDEX IF EXISTS etl.receipts_part;
