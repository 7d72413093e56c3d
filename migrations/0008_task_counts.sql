-- The `total` of the task listing (GET /v1/tasks) without counting every slice of the window:
-- slices per minute of created_at, per task type and per listing status (done = done|failed,
-- else executing), kept exact by triggers on every write path, cascades included. A count over
-- a window sums the whole minutes here (at most 6 rows a minute, whatever the number of jobs)
-- and counts only the two partial minutes at its edges in `slices`.
CREATE TABLE slice_minutes (
    minute    INTEGER NOT NULL,   -- created_at / 60000
    task_type TEXT    NOT NULL,   -- the job's task type
    done      INTEGER NOT NULL,   -- 1 when the slice's status is done or failed
    n         INTEGER NOT NULL,
    PRIMARY KEY (minute, task_type, done)
) WITHOUT ROWID;

INSERT INTO slice_minutes (minute, task_type, done, n)
SELECT s.created_at / 60000, j.task_type, s.status IN ('done', 'failed'), COUNT(*)
FROM slices s JOIN jobs j ON j.id = s.job_id
GROUP BY 1, 2, 3;

CREATE TRIGGER slice_minutes_insert AFTER INSERT ON slices
BEGIN
    INSERT INTO slice_minutes (minute, task_type, done, n)
    SELECT NEW.created_at / 60000, task_type, NEW.status IN ('done', 'failed'), 1 FROM jobs WHERE id = NEW.job_id
    ON CONFLICT (minute, task_type, done) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER slice_minutes_delete AFTER DELETE ON slices
BEGIN
    UPDATE slice_minutes SET n = n - 1
    WHERE minute = OLD.created_at / 60000 AND done = (OLD.status IN ('done', 'failed'))
      AND task_type = (SELECT task_type FROM jobs WHERE id = OLD.job_id);
END;

CREATE TRIGGER slice_minutes_update AFTER UPDATE OF status, created_at, job_id ON slices
WHEN (OLD.status IN ('done', 'failed')) != (NEW.status IN ('done', 'failed'))
  OR OLD.created_at / 60000 != NEW.created_at / 60000 OR OLD.job_id != NEW.job_id
BEGIN
    UPDATE slice_minutes SET n = n - 1
    WHERE minute = OLD.created_at / 60000 AND done = (OLD.status IN ('done', 'failed'))
      AND task_type = (SELECT task_type FROM jobs WHERE id = OLD.job_id);
    INSERT INTO slice_minutes (minute, task_type, done, n)
    SELECT NEW.created_at / 60000, task_type, NEW.status IN ('done', 'failed'), 1 FROM jobs WHERE id = NEW.job_id
    ON CONFLICT (minute, task_type, done) DO UPDATE SET n = n + 1;
END;

-- A job's slices are deleted while the job row still exists, so the delete trigger above finds
-- its task type; the cascade from `jobs` then finds none left.
CREATE TRIGGER slice_minutes_job_delete BEFORE DELETE ON jobs
BEGIN
    DELETE FROM slices WHERE job_id = OLD.id;
END;

-- A job whose task type changes (a declarative job edited in the config) moves its slices' counts.
CREATE TRIGGER slice_minutes_job_type AFTER UPDATE OF task_type ON jobs
WHEN OLD.task_type != NEW.task_type
BEGIN
    INSERT INTO slice_minutes (minute, task_type, done, n)
    SELECT created_at / 60000, OLD.task_type, status IN ('done', 'failed'), -COUNT(*) FROM slices
    WHERE job_id = NEW.id GROUP BY 1, 3
    ON CONFLICT (minute, task_type, done) DO UPDATE SET n = n + excluded.n;
    INSERT INTO slice_minutes (minute, task_type, done, n)
    SELECT created_at / 60000, NEW.task_type, status IN ('done', 'failed'), COUNT(*) FROM slices
    WHERE job_id = NEW.id GROUP BY 1, 3
    ON CONFLICT (minute, task_type, done) DO UPDATE SET n = n + excluded.n;
END;

-- A URL's slices in a window come from this index alone (no table row read per slice): it
-- replaces (job_id, first_seq) with the same prefix.
DROP INDEX slices_job_seq;
CREATE INDEX slices_job_seq_cover ON slices (job_id, first_seq, last_seq, created_at);
