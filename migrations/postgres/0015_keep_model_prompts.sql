-- A model call's prompt and answer, kept only when the agent's grant opts in
-- (grants.llm.record_prompts), each cut at 64 KiB.
ALTER TABLE llm_calls ADD COLUMN prompt TEXT;
ALTER TABLE llm_calls ADD COLUMN answer TEXT;
