-- The ledger of S3 objects: one row per pipeline and object version (S3
-- version id, else ETag). `rows_done` counts the object's rows (good or
-- not) whose outcome committed: a crash resumes right after them, and a
-- loader holding rows at or below it knows they were committed before.
-- `done` is set by the transaction of the last rows. A row is locked
-- (SELECT ... FOR UPDATE) by every chunk's transaction, so two loaders of
-- one object take turns and never commit the same rows twice.
CREATE TABLE IF NOT EXISTS etl.files (
    pipeline     text        NOT NULL,
    bucket       text        NOT NULL,
    key          text        NOT NULL,
    version      text        NOT NULL,
    etag         text,
    rows_done    bigint      NOT NULL DEFAULT 0,
    rows_written bigint      NOT NULL DEFAULT 0,
    dead_letters bigint      NOT NULL DEFAULT 0,
    done         boolean     NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (pipeline, bucket, key, version)
);
