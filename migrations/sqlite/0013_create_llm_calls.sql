-- The same as ../postgres/0013 (without row-level security).
CREATE TABLE llm_calls (
    execution_id     TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    agent_id         TEXT NOT NULL,
    model            TEXT NOT NULL,
    provider         TEXT NOT NULL,
    provider_model   TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    input_tokens     INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    usage_estimated  BOOLEAN NOT NULL,
    cost_picodollars INTEGER NOT NULL,
    latency_ms       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    finish_reason    TEXT NOT NULL,
    request_id       TEXT,
    error            TEXT,
    finished_at      TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
CREATE INDEX llm_calls_by_tenant ON llm_calls (tenant_id, finished_at);
