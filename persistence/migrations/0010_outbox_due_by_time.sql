-- The delivery worker's poll (persistence/outbox.py: due) walks the pending
-- rows in the order they fall due and stops at its limit. It used to take the
-- head of every pending stream first (DISTINCT ON over all pending rows), so
-- each poll cost as much as the whole pending outbox: with the webhook events
-- of 1,000 sessions waiting for a receiver, polling took three quarters of
-- Postgres's CPU.
-- Per destination: one with no sender configured is not polled at all.
CREATE INDEX outbox_pending_by_time ON outbox (destination, next_attempt_at, n)
    WHERE status = 'pending';

-- The rows of a stream, in order, whatever their status: statements that
-- name a stream must find its rows through it, also with a generic plan made
-- while the table was empty (which, offered a partial index on pending rows,
-- walked all of them). It replaces the partial outbox_due.
CREATE INDEX outbox_stream ON outbox (stream, n);
DROP INDEX outbox_due;
