-- The fleet store: jobs, their logs, the report outbox and host leases.
-- Times are Unix seconds (double precision), as in the SQLite store; lease times come from the
-- database's clock so that hosts' clocks need not agree.

CREATE TABLE jobs (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    script_id        TEXT NOT NULL,
    params           TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    exit_code        INTEGER,
    error            TEXT,
    idempotency_key  TEXT UNIQUE,
    files_done       BIGINT NOT NULL DEFAULT 0,
    files_total      BIGINT NOT NULL DEFAULT 0,
    bytes_done       BIGINT NOT NULL DEFAULT 0,
    bytes_total      BIGINT NOT NULL DEFAULT 0,
    timeout_s        DOUBLE PRECISION,
    host_tags        TEXT[] NOT NULL DEFAULT '{}',
    host_id          TEXT,
    host_epoch       BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    trigger          TEXT
);
CREATE INDEX jobs_queued ON jobs (seq) WHERE status = 'queued';
CREATE INDEX jobs_status ON jobs (status, seq);
CREATE INDEX jobs_script ON jobs (script_id, seq);
CREATE INDEX jobs_trigger ON jobs (trigger, seq);
CREATE INDEX jobs_host_running ON jobs (host_id) WHERE status = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    entry  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE report_outbox (
    id              BIGSERIAL PRIMARY KEY,
    job_id          TEXT NOT NULL,
    url             TEXT NOT NULL,
    token_secret    TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    failure_body    TEXT NOT NULL,
    body            TEXT,
    state           TEXT NOT NULL CHECK (state IN ('intent','pending','delivered','abandoned')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    pending_at      DOUBLE PRECISION,
    next_at         DOUBLE PRECISION,
    delivered_at    DOUBLE PRECISION,
    -- The host that delivers the row, and the lease epoch it held when it took the row: every
    -- write checks both, so a host whose lease was taken over changes nothing.
    owner           TEXT NOT NULL,
    owner_epoch     BIGINT NOT NULL
);
CREATE INDEX report_outbox_due ON report_outbox (owner, next_at) WHERE state = 'pending';
CREATE INDEX report_outbox_open ON report_outbox (owner, state) WHERE state IN ('intent','pending');
CREATE INDEX report_outbox_job ON report_outbox (job_id);

CREATE TABLE hosts (
    host_id       TEXT PRIMARY KEY,
    epoch         BIGINT NOT NULL,
    tags          TEXT[] NOT NULL DEFAULT '{}',
    lease_s       DOUBLE PRECISION NOT NULL,
    -- NULL: the host let go of its lease (a clean stop) or was taken over.
    heartbeat_at  DOUBLE PRECISION,
    started_at    DOUBLE PRECISION NOT NULL,
    taken_over_by TEXT,
    taken_over_at DOUBLE PRECISION
);
