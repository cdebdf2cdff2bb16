-- Model tokens (input and output) per scope and day, for the token budgets.
ALTER TABLE usage_counters ADD COLUMN tokens BIGINT NOT NULL DEFAULT 0;
