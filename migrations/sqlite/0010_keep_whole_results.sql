-- An execution keeps its whole output (bounded by its output limit), and its whole
-- input when its agent's policy opts in (`record_input`, bounded by the body limit);
-- the 1 KiB excerpts stay for lists.
ALTER TABLE executions ADD COLUMN output TEXT;
ALTER TABLE executions ADD COLUMN input TEXT;
