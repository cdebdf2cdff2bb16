-- An execution record says how many characters the database could not hold (NUL)
-- were replaced, and whether only its outcome, usage and cost could be stored.
ALTER TABLE executions ADD COLUMN replaced_characters BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN record_degraded BOOLEAN NOT NULL DEFAULT FALSE;
