-- Leases (issue 28): who does a piece of shared work, for how long, under
-- which epoch. A pipeline's object claims (`object <bucket>/<key>`), its
-- SFTP pass (`sftp`) and its reconcile ranges (below) are taken here by one host at a time, renewed in short transactions and
-- released by deleting the row; a lease whose `expires_at` passed may be
-- taken over by another host. Every take draws a new epoch from one
-- sequence, so an epoch is never given twice and rises at each takeover;
-- a commit made under a lease first reads its row `FOR SHARE` with the
-- holder and epoch it was given (the fence): a host whose lease was taken
-- over finds no such row and commits nothing, and a takeover waits for
-- the commits under way. Nothing here is session state, so leases work
-- through a transaction pooler, unlike the session advisory locks they
-- replace.
CREATE SEQUENCE IF NOT EXISTS etl.lease_epochs;

CREATE TABLE IF NOT EXISTS etl.leases (
    pipeline   text        NOT NULL,
    name       text        NOT NULL,
    holder     text        NOT NULL,
    epoch      bigint      NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (pipeline, name)
);

-- A pipeline's reconcile pass is split into key ranges, each listed and
-- loaded by whichever host takes its lease (`reconcile <bucket>/<prefix>
-- after <after>`): a range holds the keys after `after` (exclusive; ''
-- for the first) up to the next range's `after` (inclusive). A pass that
-- listed more than the pipeline's `range_objects` in a range splits it,
-- so that N hosts list and load a large bucket in parallel. `passed_at`:
-- when a pass of the range last ended; `objects`: what it listed.
CREATE TABLE IF NOT EXISTS etl.reconcile_ranges (
    pipeline  text        NOT NULL,
    bucket    text        NOT NULL,
    prefix    text        NOT NULL,
    after     text        COLLATE "C" NOT NULL,
    passed_at timestamptz,
    objects   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline, bucket, prefix, after)
);
