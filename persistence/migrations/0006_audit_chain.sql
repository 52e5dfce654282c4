-- The audit log becomes hash-chained, like the journal (persistence/audit_chain.py):
-- each row carries its place in the chain, the previous row's hash and its own.
-- Rows written before this migration keep NULLs here: they may only come before
-- the first chained row (`run.py verify-audit` refuses an unchained row after it).
ALTER TABLE audit_log
    ADD COLUMN chain_seq bigint,
    ADD COLUMN prev_hash text,
    ADD COLUMN hash      text;

-- The head of the chain: one row, locked (SELECT ... FOR UPDATE) by each batch's
-- transaction, so that the writers of several processes extend one chain in
-- turn; updated in the same transaction as the rows, so a cut tail shows.
CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint  NOT NULL,
    hash      text    NOT NULL
);
INSERT INTO audit_chain_head (singleton, seq, hash) VALUES (true, 0, repeat('0', 64));
