-- Every row can say what made it (issue 25). A batch records, beside each
-- step's plugin digest, the digest of the step's params (each entry of
-- `plugins` gains "params": "sha256:...") and the revision of the pipeline
-- file its version came from: a params-only change is a version of its own.
-- NULL for batches committed before this migration.
ALTER TABLE etl.batches ADD COLUMN IF NOT EXISTS revision text;

-- Each step's params as canonical JSON (keys sorted, no whitespace), kept
-- once by its digest rather than in every batch: a batch carries 71 bytes
-- a step, whatever the size of its params. Params name secrets, never hold
-- them (keys reach the host's `hex-digests` import through `grants.secrets`,
-- by name), so this is the pipeline file's own text, as readable as
-- etl.batches.
CREATE TABLE IF NOT EXISTS etl.step_params (
    digest     text        PRIMARY KEY,
    params     text        NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);
