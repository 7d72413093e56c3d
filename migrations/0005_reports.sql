-- Report subscriptions (seed 000, DeliverTask) and their deliveries. `next_run` is the source of
-- truth across restarts; every period is one row of `report_deliveries`, unique per
-- (subscription, period_start) and created in the same transaction that moves `next_run`, so a
-- period is queued once and — being marked `sending` before each attempt — delivered at most once.
CREATE TABLE report_subscriptions (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    reports      TEXT    NOT NULL,             -- JSON [{report_id, conditions: [{field, op, value[]}]}]
    domain_names TEXT    NOT NULL DEFAULT '[]',-- JSON array; empty = every domain
    deliver      TEXT    NOT NULL,             -- JSON {"email": {...}} | {"webhook": {...}}
    schedule     TEXT    NOT NULL,             -- JSON {sched_name, description, crontab, frequency, ...}
    enabled      INTEGER NOT NULL DEFAULT 1,
    source       TEXT    NOT NULL CHECK (source IN ('config', 'api')),
    next_run     INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX report_subscriptions_next ON report_subscriptions (enabled, next_run);

CREATE TABLE report_deliveries (
    id              INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL REFERENCES report_subscriptions (id) ON DELETE CASCADE,
    period_start    INTEGER NOT NULL,
    period_end      INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT    NOT NULL DEFAULT '',
    next_attempt_at INTEGER,
    sent_at         INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (subscription_id, period_start)
);
CREATE INDEX report_deliveries_due ON report_deliveries (status, next_attempt_at);
