-- The delivery worker's poll (persistence/outbox.py: due) walks the pending
-- rows in the order they fall due and stops at its limit. It used to take the
-- head of every pending stream first (DISTINCT ON over all pending rows), so
-- each poll cost as much as the whole pending outbox: with 1,000 undeliverable
-- text messages waiting, three quarters of Postgres's CPU went to polling.
CREATE INDEX outbox_pending_by_time ON outbox (next_attempt_at, n) WHERE status = 'pending';
