-- A batch's source ids are its ledger rows (etl.ledger.batch_id); keeping
-- them again as an array in etl.batches doubled the writes per message.
ALTER TABLE etl.batches DROP COLUMN IF EXISTS message_ids;
CREATE INDEX IF NOT EXISTS ledger_batch ON etl.ledger (batch_id);
