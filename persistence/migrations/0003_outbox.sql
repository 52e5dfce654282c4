-- The transactional outbox: events for the outside world, written in the
-- same transaction as the journal events that cause them, then relayed by
-- the delivery worker. `stream` orders deliveries (one destination of one
-- session); different streams do not wait for each other.
CREATE TABLE outbox (
    id              text        PRIMARY KEY,  -- the event id receivers dedupe on
    n               bigserial   UNIQUE,       -- insertion order
    stream          text        NOT NULL,
    session_id      text,
    destination     text        NOT NULL CHECK (destination IN ('webhook', 'sms')),
    type            text        NOT NULL,
    payload         jsonb       NOT NULL,
    recipient       integer,                  -- index in session.distribute's recipients
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX outbox_due ON outbox (stream, n) WHERE status = 'pending';
CREATE INDEX outbox_status ON outbox (status, n);
CREATE INDEX outbox_session ON outbox (session_id, n);
