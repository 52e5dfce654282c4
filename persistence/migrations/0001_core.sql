-- The event journal: one row per durable event, hash-chained per actor.
-- (actor_id, seq) is the fence against a second, stale activation.
CREATE TABLE journal (
    actor_id   text        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq > 0),
    name       text        NOT NULL,
    data       jsonb       NOT NULL,
    at         timestamptz NOT NULL,
    prev_hash  text        NOT NULL,
    hash       text        NOT NULL,
    PRIMARY KEY (actor_id, seq)
);

-- Latest snapshot per actor, for fast activation.
CREATE TABLE snapshots (
    actor_id   text        PRIMARY KEY,
    seq        bigint      NOT NULL,
    state      jsonb       NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);

-- Replies of state-changing client requests, so a retry returns the first answer.
CREATE TABLE idempotency (
    actor_id    text        NOT NULL,
    user_id     text        NOT NULL,
    request_id  text        NOT NULL,
    fingerprint text        NOT NULL,
    reply       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor_id, user_id, request_id)
);

-- Projection of each session's latest snapshot, written in the same
-- transaction as its journal rows; read by HTTP listings and recovery.
CREATE TABLE sessions (
    session_id  text        PRIMARY KEY,
    state       text        NOT NULL,
    customer_id text        NOT NULL,
    enp_id      text,
    seq         bigint      NOT NULL,
    snapshot    jsonb       NOT NULL,
    request     jsonb       NOT NULL, -- what matching needs: criteria, preferred notary
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX sessions_state ON sessions (state, created_at);
CREATE INDEX sessions_enp ON sessions (enp_id) WHERE enp_id IS NOT NULL;

-- Offers made to notaries, written with the notary's journal rows.
CREATE TABLE offers (
    offer_id    text        PRIMARY KEY,
    session_id  text        NOT NULL,
    notary_id   text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('open','accepted','declined','expired','withdrawn')),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    resolved_at timestamptz
);
CREATE INDEX offers_session ON offers (session_id);
CREATE UNIQUE INDEX offers_one_open_per_notary ON offers (notary_id) WHERE state = 'open';

-- Notary profiles (PUT /v1/notaries/{id}) and the live response-time average.
CREATE TABLE notaries (
    notary_id          text        PRIMARY KEY,
    profile            jsonb       NOT NULL,
    live_avg_response_s double precision,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE favorites (
    customer_id text        PRIMARY KEY,
    notary_ids  jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
