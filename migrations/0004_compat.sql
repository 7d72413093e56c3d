-- Jobs made through the ESA scheduled-preload facade remember their SiteId and InsertWay.
CREATE TABLE compat_jobs (
    job_id     INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    site_id    INTEGER NOT NULL,
    insert_way TEXT    NOT NULL
);
CREATE INDEX compat_jobs_site ON compat_jobs (site_id);
