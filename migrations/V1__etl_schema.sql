-- The host's own tables: the ledger of committed messages, the dead letters
-- and the lineage of committed batches. Staging tables are per-session
-- temporary tables (see ARCHITECTURE.md), so they need no DDL here.
CREATE SCHEMA IF NOT EXISTS etl;

-- One row per source message whose outcome (rows or dead letter) committed.
-- A redelivered message finds its row here and adds nothing.
CREATE TABLE IF NOT EXISTS etl.ledger (
    pipeline     text        NOT NULL,
    message_id   text        NOT NULL,
    batch_id     bigint      NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, message_id)
);

-- Every committed batch: what it read, what it wrote, which plugin versions.
CREATE TABLE IF NOT EXISTS etl.batches (
    id            bigserial   PRIMARY KEY,
    pipeline      text        NOT NULL,
    source        text        NOT NULL,
    messages      integer     NOT NULL,
    rows_written  integer     NOT NULL,
    dead_letters  integer     NOT NULL,
    plugins       jsonb       NOT NULL,
    message_ids   text[]      NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now()
);

-- Records that could not be loaded, with why. No payload here: see below.
CREATE TABLE IF NOT EXISTS etl.dead_letters (
    id             bigserial   PRIMARY KEY,
    pipeline       text        NOT NULL,
    source         text        NOT NULL,
    message_id     text        NOT NULL,
    record_index   integer     NOT NULL DEFAULT 0,
    stage          text        NOT NULL,
    step           integer,
    plugin         text,
    plugin_digest  text,
    reason         text        NOT NULL,
    received_count integer     NOT NULL DEFAULT 1,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    replayed_at    timestamptz,
    replay_result  text
);
CREATE INDEX IF NOT EXISTS dead_letters_pipeline ON etl.dead_letters (pipeline, failed_at);

-- The raw payloads (PII). Kept apart so that access can be granted to the
-- few who replay: PUBLIC has no rights on it. Encrypted (AES-256-GCM) when
-- the host has HOST_DEAD_LETTER_KEY; `key_id` says which key, NULL = plain.
CREATE TABLE IF NOT EXISTS etl.dead_letter_payloads (
    dead_letter_id bigint PRIMARY KEY REFERENCES etl.dead_letters (id) ON DELETE CASCADE,
    key_id         text,
    nonce          bytea,
    payload        bytea  NOT NULL
);
REVOKE ALL ON etl.dead_letter_payloads FROM PUBLIC;
