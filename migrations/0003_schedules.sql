-- Recurring schedules: a cron rule in a time zone that creates a fresh plan of its job at every
-- firing. `next_fire` is the source of truth across restarts; every firing is one row of
-- `schedule_firings`, unique per (schedule, fire time), written in the same transaction as the
-- plan it creates, so a firing happens at most once whatever crashes.
CREATE TABLE schedules (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
    cron            TEXT    NOT NULL,
    timezone        TEXT    NOT NULL,
    window_ms       INTEGER NOT NULL CHECK (window_ms > 0),
    interval_ms     INTEGER NOT NULL CHECK (interval_ms > 0),
    slice_len       INTEGER NOT NULL CHECK (slice_len > 0),
    effective_from  INTEGER,
    effective_until INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1,
    missed          TEXT    NOT NULL DEFAULT 'run_once' CHECK (missed IN ('run_once', 'skip')),
    next_fire       INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX schedules_next ON schedules (enabled, next_fire);

CREATE TABLE schedule_firings (
    id          INTEGER PRIMARY KEY,
    schedule_id INTEGER NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    fire_at     INTEGER NOT NULL,
    fired_at    INTEGER NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('planned', 'skipped')),
    plan_id     INTEGER,
    detail      TEXT    NOT NULL DEFAULT '',
    UNIQUE (schedule_id, fire_at)
);
