-- Issue 25: shadow runs and their decisions.
--
-- One row per pipeline and candidate (the candidate chain's fingerprint:
-- each step's plugin digest, params and grants): what it would change so
-- far, summed over every process and restart that ran it. `summary` is
-- the diff's counts, per-column change counts and a bounded sample of
-- labels of differing records (message ids, object lines; key values only
-- when the pipeline lets values into logs). `state` follows the last
-- decision: running, promoted or discarded.
CREATE TABLE IF NOT EXISTS etl.shadows (
    pipeline          text             NOT NULL,
    candidate         text             NOT NULL,
    changes           text             NOT NULL,
    state             text             NOT NULL DEFAULT 'running'
                      CHECK (state IN ('running', 'promoted', 'discarded')),
    summary           jsonb            NOT NULL,
    batches           bigint           NOT NULL DEFAULT 0,
    skipped           bigint           NOT NULL DEFAULT 0,
    trapped           bigint           NOT NULL DEFAULT 0,
    production_cpu_s  double precision NOT NULL DEFAULT 0,
    candidate_cpu_s   double precision NOT NULL DEFAULT 0,
    started_at        timestamptz      NOT NULL DEFAULT now(),
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, candidate)
);

-- Every decision on a candidate, who or what made it and when, and what
-- came of it. A decision is asked for here (by `host shadow promote` or
-- `discard`, the admin endpoint, or `promote_when`) and carried out by
-- each running host of the pipeline that runs that candidate; the first
-- records the outcome (`done`, or `refused` with why). NULL: not taken
-- up yet.
CREATE TABLE IF NOT EXISTS etl.shadow_decisions (
    id            bigserial   PRIMARY KEY,
    pipeline      text        NOT NULL,
    candidate     text        NOT NULL,
    action        text        NOT NULL CHECK (action IN ('promote', 'discard')),
    decided_by    text        NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now(),
    outcome       text        CHECK (outcome IN ('done', 'refused')),
    reason        text,
    settled_at    timestamptz
);
CREATE INDEX IF NOT EXISTS shadow_decisions_by_candidate ON etl.shadow_decisions (pipeline, candidate, id);
