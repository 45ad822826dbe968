-- The ledger, one row per batch and sent-time partition instead of one per
-- message. A per-message key cost a B-tree insert per message (4-9 us here,
-- more than the row it guarded). Now a batch writes, for each 10 ms slice of
-- its messages' SentTimestamp, one row holding those message ids; every
-- delivery of a message carries the same SentTimestamp, so a redelivery is
-- found by reading the few rows of its own slice. Commits of one pipeline
-- take a transaction-scoped advisory lock just before that check, so two
-- hosts holding the same message cannot both commit it.
CREATE TABLE IF NOT EXISTS etl.receipts (
    pipeline    text   NOT NULL,
    part        bigint NOT NULL,
    batch_id    bigint NOT NULL,
    message_ids text[] NOT NULL
);
-- The partition leads the key: a look-up is `part = ANY(...)` and must
-- probe, whatever the statistics say about a pipeline's share of rows.
CREATE INDEX IF NOT EXISTS receipts_part ON etl.receipts (part, pipeline);
-- Lineage ("which messages did batch N hold"): batch ids only grow.
CREATE INDEX IF NOT EXISTS receipts_batch ON etl.receipts USING brin (batch_id);

-- Messages recorded by the per-message ledger keep guarding: they move to
-- the partition that every look-up also reads.
INSERT INTO etl.receipts (pipeline, part, batch_id, message_ids)
SELECT pipeline, -9223372036854775808, batch_id, array_agg(message_id)
FROM etl.ledger GROUP BY pipeline, batch_id;
DROP TABLE etl.ledger;
