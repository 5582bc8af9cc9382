-- Trigger state shared by the fleet: one row per fire (a schedule's due time, a watched file
-- version, a manual run), claimed by the insert that creates it, so a fire is claimed once for
-- the whole fleet; and each trigger's settings (definition in force, since when, paused).
-- Fire keys and paths are bytes: a file version's key joins its parts with NUL, and a file
-- name need not be UTF-8 (Python's surrogateescape bytes), neither of which TEXT can hold.

CREATE TABLE trigger_fires (
    trigger    TEXT NOT NULL,
    fire_key   BYTEA NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('schedule', 'watch', 'run')),
    script     TEXT NOT NULL,
    params     TEXT NOT NULL,
    path       BYTEA,
    size       BIGINT,
    mtime      DOUBLE PRECISION,
    due_at     DOUBLE PRECISION,
    attempt    INTEGER NOT NULL DEFAULT 1,
    state      TEXT NOT NULL CHECK (state IN ('claimed', 'waiting', 'submitted', 'succeeded',
                                              'done', 'failed', 'skipped')),
    job_id     TEXT,
    idem_key   TEXT NOT NULL,
    error      TEXT,
    claimed_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trigger, fire_key)
);
CREATE INDEX trigger_fires_job ON trigger_fires (job_id);
CREATE INDEX trigger_fires_idem ON trigger_fires (idem_key);
CREATE INDEX trigger_fires_state ON trigger_fires (state, trigger);
CREATE INDEX trigger_fires_path ON trigger_fires (trigger, path);
CREATE INDEX trigger_fires_claimed ON trigger_fires (trigger, claimed_at);

CREATE TABLE trigger_state (
    trigger    TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    since      DOUBLE PRECISION NOT NULL,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at DOUBLE PRECISION NOT NULL
);
