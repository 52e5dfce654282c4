-- The legal record: append-only tables for the journal, the notarial book,
-- signed envelopes and the audit log. The application never updates or
-- deletes these rows; the triggers refuse it (a superuser can still bypass
-- them, which is what the journal's hash chain is there to detect).
CREATE FUNCTION enf_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION enf_append_only();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION enf_append_only();

-- Electronic Notarial Book (A.M. No. 24-10-14-SC): one entry per act,
-- incomplete acts included, numbered per notary. `entry` holds the fields;
-- personal data in it is sealed with the PII key.
CREATE TABLE notarial_book (
    notary_id   text        NOT NULL,
    entry_no    bigint      NOT NULL,
    session_id  text        NOT NULL UNIQUE,
    complete    boolean     NOT NULL,
    act_at      timestamptz NOT NULL,
    entry       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notary_id, entry_no)
);
CREATE INDEX notarial_book_month ON notarial_book (notary_id, act_at);
CREATE TRIGGER notarial_book_append_only BEFORE UPDATE OR DELETE ON notarial_book
    FOR EACH ROW EXECUTE FUNCTION enf_append_only();
CREATE TRIGGER notarial_book_no_truncate BEFORE TRUNCATE ON notarial_book
    FOR EACH STATEMENT EXECUTE FUNCTION enf_append_only();

-- The last entry number given per notary (the row lock orders concurrent entries).
CREATE TABLE notarial_book_counters (
    notary_id     text   PRIMARY KEY,
    last_entry_no bigint NOT NULL
);

-- Signed TRUTH envelopes; `sealed` is the signed object, sealed with the PII
-- key (it names the principal).
CREATE TABLE envelopes (
    envelope_id text        PRIMARY KEY,
    session_id  text        NOT NULL UNIQUE,
    key_id      text        NOT NULL,
    sealed      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER envelopes_append_only BEFORE UPDATE OR DELETE ON envelopes
    FOR EACH ROW EXECUTE FUNCTION enf_append_only();

-- Who did what, allowed or refused (the platform design's audit_logs, plus
-- outcome and correlation id).
CREATE TABLE audit_log (
    id             bigserial   PRIMARY KEY,
    at             timestamptz NOT NULL,
    event_type     text        NOT NULL,
    user_id        text,
    ip_address     text,
    user_agent     text,
    resource_type  text,
    resource_id    text,
    action         text        NOT NULL,
    outcome        text        NOT NULL,
    error_code     text,
    correlation_id text        NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_resource ON audit_log (resource_id, at);
CREATE INDEX audit_log_user ON audit_log (user_id, at);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION enf_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION enf_append_only();
