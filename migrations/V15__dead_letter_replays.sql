-- Issue 23: dead letters keep what they were kept for.
--
-- A replay that fails leaves its dead letter as it was (source, message,
-- file and version) and counts the attempt here: how many, the last one's
-- time and reason. A replay that loads sets `replayed_at` as before.
ALTER TABLE etl.dead_letters
    ADD COLUMN IF NOT EXISTS replay_attempts    integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_replay_at     timestamptz,
    ADD COLUMN IF NOT EXISTS last_replay_reason text;

-- What a payload holds: `record` (a message body or a row as a record,
-- JSON), `row` (a row of a file as the file held it, a CSV record after
-- the file's header line: replay reads it with the pipeline's format), or
-- `cut-row` (the first max_record_bytes of a longer row: kept to look at,
-- never replayed).
ALTER TABLE etl.dead_letter_payloads
    ADD COLUMN IF NOT EXISTS form text NOT NULL DEFAULT 'record'
        CHECK (form IN ('record', 'row', 'cut-row'));

-- Replay pages through a pipeline's dead letters not yet replayed by id
-- (500 at a time); the status page counts them.
CREATE INDEX IF NOT EXISTS dead_letters_pending ON etl.dead_letters (pipeline, id) WHERE replayed_at IS NULL;
