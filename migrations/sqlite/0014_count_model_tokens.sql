-- The same as ../postgres/0014.
ALTER TABLE usage_counters ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
