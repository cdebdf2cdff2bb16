-- Every model call an execution made: who served it, its tokens, its exact cost and
-- how it ended. Deleted with its execution (retention).
CREATE TABLE llm_calls (
    execution_id     TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    agent_id         TEXT NOT NULL,
    model            TEXT NOT NULL,
    provider         TEXT NOT NULL,
    provider_model   TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    input_tokens     BIGINT NOT NULL,
    output_tokens    BIGINT NOT NULL,
    usage_estimated  BOOLEAN NOT NULL,
    cost_picodollars BIGINT NOT NULL,
    latency_ms       BIGINT NOT NULL,
    attempts         INTEGER NOT NULL,
    finish_reason    TEXT NOT NULL,
    request_id       TEXT,
    error            TEXT,
    finished_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
CREATE INDEX llm_calls_by_tenant ON llm_calls (tenant_id, finished_at);

ALTER TABLE llm_calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_calls FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON llm_calls
    USING (tenant_id = current_setting('corral.tenant_id', true)
           OR coalesce(current_setting('corral.operator_wide', true), '') <> '')
    WITH CHECK (tenant_id = current_setting('corral.tenant_id', true)
                OR coalesce(current_setting('corral.operator_wide', true), '') <> '');
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'corral_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON llm_calls TO corral_app;
    END IF;
END $$;
