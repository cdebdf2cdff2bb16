-- Executions record the call tree they belong to (calls between agents) and what
-- their capabilities used and refused. The same as ../postgres/0006.
ALTER TABLE executions ADD COLUMN parent_execution_id TEXT;
ALTER TABLE executions ADD COLUMN root_execution_id TEXT;
ALTER TABLE executions ADD COLUMN call_depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN capabilities TEXT NOT NULL DEFAULT '{}';
CREATE INDEX executions_by_root ON executions (tenant_id, root_execution_id) WHERE root_execution_id IS NOT NULL;
