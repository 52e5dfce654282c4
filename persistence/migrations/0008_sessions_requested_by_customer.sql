-- The per-customer limit on waiting requests (gateway/limits.py, ENF_MAX_OPEN_REQUESTS)
-- counts a customer's sessions in REQUESTED on every `session.request`
-- (persistence/sessions.py open_requests_of). Without an index on the
-- customer that count scanned the whole table, so each request cost more as
-- the queue (and the history) grew (issue 15): 7 ms with 10,000 rows.
CREATE INDEX sessions_requested_by_customer ON sessions (customer_id) WHERE state = 'REQUESTED';
