-- The ops summary's match latency (GET /v1/ops/summary, persistence/queue_stats.py)
-- reads the offers accepted within the last hour; without an index it scanned
-- every offer ever made, on each refresh of each open ops page.
CREATE INDEX offers_accepted_by_time ON offers (resolved_at) WHERE state = 'accepted';
