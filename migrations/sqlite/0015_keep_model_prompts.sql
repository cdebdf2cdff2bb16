-- The same as ../postgres/0015.
ALTER TABLE llm_calls ADD COLUMN prompt TEXT;
ALTER TABLE llm_calls ADD COLUMN answer TEXT;
