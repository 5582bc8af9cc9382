-- Notifications ([[notify]]) shared by the fleet: queued rows with the host that delivers each
-- and the lease epoch it holds it under (as in report_outbox), and the intents of running jobs
-- some notification wants to hear about, with the host that runs them.

CREATE TABLE notify_outbox (
    id              BIGSERIAL PRIMARY KEY,
    notify          TEXT NOT NULL,
    event           TEXT NOT NULL,
    job_id          TEXT,
    url             TEXT NOT NULL,
    url_secret      TEXT,
    hmac_secret     TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'abandoned')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    next_at         DOUBLE PRECISION,
    delivered_at    DOUBLE PRECISION,
    owner           TEXT NOT NULL,
    owner_epoch     BIGINT NOT NULL
);
CREATE INDEX notify_outbox_due ON notify_outbox (owner, next_at) WHERE state = 'pending';

CREATE TABLE notify_intents (
    job_id     TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    owner      TEXT NOT NULL
);
CREATE INDEX notify_intents_owner ON notify_intents (owner);
