-- When a slice's first vendor request left: slices may be taken a little ahead of their due
-- time (their state committed early), so lateness is measured at the send, not at the take.
ALTER TABLE slices ADD COLUMN sent_at INTEGER;

-- The engine loop asks "what starts or closes next" on every turn: with ten thousand plans
-- these must be index seeks, not scans.
CREATE INDEX plans_status_start ON plans (status, start_time);
CREATE INDEX plans_status_end ON plans (status, end_time);
