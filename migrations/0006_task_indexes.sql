-- The task listing (GET /v1/tasks, ListContentTasks) over millions of slices: by status within a
-- time range, and a URL's slices found from (job, seq) instead of scanning every slice.
CREATE INDEX slices_status_created ON slices (status, created_at);
-- Covers a count or a page by time range filtered on job (task type) or status without
-- touching the table rows.
CREATE INDEX slices_created_cover ON slices (created_at, job_id, status);
CREATE INDEX slices_job_seq ON slices (job_id, first_seq);
-- The largest slice a job ever had, so a URL's slices are found in a narrow (job_id, first_seq)
-- range: first_seq in (seq - max_slice, seq].
ALTER TABLE jobs ADD COLUMN max_slice INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET max_slice = COALESCE((SELECT MAX(url_count) FROM slices WHERE slices.job_id = jobs.id), 0);
