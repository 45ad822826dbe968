-- Look-ups are "which of these message ids": with the message id first in
-- the key, `message_id = ANY(...)` probes the index directly instead of
-- scanning every entry of the pipeline.
ALTER TABLE etl.ledger DROP CONSTRAINT ledger_pkey;
ALTER TABLE etl.ledger ADD CONSTRAINT ledger_pkey PRIMARY KEY (message_id, pipeline);
