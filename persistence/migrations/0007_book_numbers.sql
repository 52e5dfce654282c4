-- Notarial book numbers reserved before the entry is written (issue 14): the
-- TRUTH envelope carries its entry number, so finalisation takes the number
-- first, in a statement of its own, then signs the envelope and writes the
-- entry with that number. Every number a notary's counter gives goes to
-- exactly one session here; a session keeps its number (a finalisation
-- retried after a crash gets the same one), so numbers are neither skipped
-- nor given twice.
CREATE TABLE notarial_book_reservations (
    session_id  text        PRIMARY KEY,
    notary_id   text        NOT NULL,
    entry_no    bigint      NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (notary_id, entry_no),
    UNIQUE (session_id, notary_id, entry_no)
);
CREATE TRIGGER notarial_book_reservations_append_only
    BEFORE UPDATE OR DELETE ON notarial_book_reservations
    FOR EACH ROW EXECUTE FUNCTION enf_append_only();
CREATE TRIGGER notarial_book_reservations_no_truncate
    BEFORE TRUNCATE ON notarial_book_reservations
    FOR EACH STATEMENT EXECUTE FUNCTION enf_append_only();

-- The entries written before this migration had their numbers from the
-- counter in the same statement: they are their own reservations.
INSERT INTO notarial_book_reservations (session_id, notary_id, entry_no, reserved_at)
    SELECT session_id, notary_id, entry_no, created_at FROM notarial_book;

-- An entry bears the number reserved for its session, and no other.
ALTER TABLE notarial_book ADD CONSTRAINT notarial_book_reserved
    FOREIGN KEY (session_id, notary_id, entry_no)
    REFERENCES notarial_book_reservations (session_id, notary_id, entry_no);
