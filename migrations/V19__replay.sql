-- Issue 25: replays of stored objects through a chosen chain (`host replay
-- --apply`). One row per pipeline, object version (as `etl.files` records
-- it) and chain (the digest of the chain's plugins and params): how many of
-- the object's rows the replay committed, like `etl.files`, so a crash
-- resumes after them and a second identical replay changes nothing. The
-- first rows of a replay remove the other chains' rows of the same version
-- (and the object's rows in the table): the latest replay is the one done.
CREATE TABLE IF NOT EXISTS etl.replays (
    pipeline     text        NOT NULL,
    bucket       text        NOT NULL,
    key          text        NOT NULL,
    version      text        NOT NULL,
    chain        text        NOT NULL,
    rows_done    bigint      NOT NULL DEFAULT 0,
    rows_written bigint      NOT NULL DEFAULT 0,
    dead_letters bigint      NOT NULL DEFAULT 0,
    done         boolean     NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (pipeline, bucket, key, version, chain)
);
