-- Core state of preloadd: jobs and their ordered URLs, plans (windows), slices (ticks),
-- subtasks (one per slice and vendor account) and per-URL outcomes.
-- All times are unix milliseconds (UTC).

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    task_type       TEXT    NOT NULL CHECK (task_type IN ('preload', 'refresh_file', 'refresh_dir')),
    vendors         TEXT    NOT NULL,             -- JSON array of vendor account names
    source          TEXT    NOT NULL CHECK (source IN ('config', 'api')),
    catch_up        TEXT    NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'burst')),
    cursor          INTEGER NOT NULL DEFAULT 0,   -- seq of the next URL to put in a slice
    next_seq        INTEGER NOT NULL DEFAULT 0,   -- seq the next appended URL gets
    url_count       INTEGER NOT NULL DEFAULT 0,
    rejected_count  INTEGER NOT NULL DEFAULT 0,
    rejected_report TEXT    NOT NULL DEFAULT '',  -- first rejected lines: "line N: reason"
    list_digest     TEXT    NOT NULL DEFAULT '',  -- config jobs: digest of the list, to detect changes
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE urls (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    url    TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX urls_job_url ON urls (job_id, url);

CREATE TABLE plans (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    start_time  INTEGER NOT NULL,
    end_time    INTEGER NOT NULL,
    interval_ms INTEGER NOT NULL CHECK (interval_ms > 0),
    slice_len   INTEGER NOT NULL CHECK (slice_len > 0),
    status      TEXT    NOT NULL CHECK (status IN ('waiting', 'running', 'finished', 'stopped', 'failed')),
    error_info  TEXT    NOT NULL DEFAULT '',
    next_due    INTEGER,                           -- due time of the next slice while running
    slices_sent INTEGER NOT NULL DEFAULT 0,
    urls_sent   INTEGER NOT NULL DEFAULT 0,
    source      TEXT    NOT NULL DEFAULT 'api',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX plans_job ON plans (job_id, start_time);
CREATE INDEX plans_status ON plans (status, next_due);

CREATE TABLE slices (
    id         INTEGER PRIMARY KEY,
    plan_id    INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    k          INTEGER NOT NULL,                   -- index of the slice within its plan
    due_at     INTEGER NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    url_count  INTEGER NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('pending', 'submitting', 'submitted', 'done', 'failed')),
    created_at INTEGER NOT NULL,
    recorded_at INTEGER,                           -- every subtask submitted or failed
    done_at    INTEGER
);
CREATE INDEX slices_job ON slices (job_id, status);
CREATE INDEX slices_plan ON slices (plan_id, k);
CREATE INDEX slices_created ON slices (created_at);

CREATE TABLE subtasks (
    id              INTEGER PRIMARY KEY,
    slice_id        INTEGER NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    vendor          TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'submitting', 'submitted', 'done', 'failed')),
    urls_sent       INTEGER NOT NULL DEFAULT 0,    -- prefix of the slice's URLs the vendor accepted
    vendor_task_ids TEXT    NOT NULL DEFAULT '[]', -- JSON array
    attempts        INTEGER NOT NULL DEFAULT 0,
    error_code      TEXT    NOT NULL DEFAULT '',
    error_message   TEXT    NOT NULL DEFAULT '',
    submitting_at   INTEGER,
    submitted_at    INTEGER,
    done_at         INTEGER,
    next_poll_at    INTEGER,
    wait_until      INTEGER,                       -- quota pause or backoff: not before this time
    wait_reason     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX subtasks_slice ON subtasks (slice_id);
CREATE INDEX subtasks_status ON subtasks (status, next_poll_at);

CREATE TABLE url_outcomes (
    subtask_id INTEGER NOT NULL REFERENCES subtasks (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'unknown')),
    detail     TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (subtask_id, seq)
) WITHOUT ROWID;
