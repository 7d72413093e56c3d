-- Daily quota per vendor account and bucket (task type, and region where the vendor counts
-- per region), per vendor day (Asia/Shanghai). `remaining` is learned from the vendor's quota
-- API at the first use of the day (or the configured daily_quota), then tracked locally.
CREATE TABLE quota_usage (
    vendor    TEXT    NOT NULL,
    bucket    TEXT    NOT NULL,
    day       TEXT    NOT NULL,
    quota     INTEGER NOT NULL,
    remaining INTEGER NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (vendor, bucket, day)
);
