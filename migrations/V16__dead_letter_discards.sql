-- Issue 24: dead letters can be discarded.
--
-- A discarded dead letter stays in the table (with its payload) but is
-- done with: `host dead-letters discard` records when and by whom, and
-- from then on `list` (without --all), `replay` and the status page leave
-- it out. "Open" below means neither replayed nor discarded.
ALTER TABLE etl.dead_letters
    ADD COLUMN IF NOT EXISTS discarded_at timestamptz,
    ADD COLUMN IF NOT EXISTS discarded_by text;

-- The open dead letters of a pipeline by id: replay pages through them
-- oldest first, `list` shows them, and the status page reads each
-- pipeline's newest ones (a bounded backward scan) to count them by stage
-- and reason. It replaces V15's index on those not replayed, which would
-- hold every discarded one for ever.
CREATE INDEX IF NOT EXISTS dead_letters_open ON etl.dead_letters (pipeline, id)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;
DROP INDEX IF EXISTS etl.dead_letters_pending;
