-- Tenants, API keys, agents and their versions, executions, audit events and
-- idempotency records. Every tenant-scoped table carries tenant_id.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    is_operator BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    created_by   TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    name              TEXT NOT NULL,
    description       TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('active', 'paused')),
    policy            JSONB NOT NULL,
    active_version_id TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    deleted_at        TIMESTAMPTZ
);
CREATE UNIQUE INDEX agents_live_name ON agents (tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX agents_by_tenant ON agents (tenant_id, id);

CREATE TABLE agent_versions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    agent_id    TEXT NOT NULL REFERENCES agents (id),
    version     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    metadata    JSONB NOT NULL,
    component   BYTEA NOT NULL,
    uploaded_by TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (agent_id, sha256),
    UNIQUE (agent_id, version)
);
CREATE INDEX agent_versions_by_agent ON agent_versions (tenant_id, agent_id, id);

CREATE TABLE executions (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    agent_id          TEXT NOT NULL REFERENCES agents (id),
    agent_name        TEXT NOT NULL,
    version_id        TEXT NOT NULL REFERENCES agent_versions (id),
    version           TEXT NOT NULL,
    action            TEXT NOT NULL,
    outcome           TEXT NOT NULL,
    error_code        TEXT,
    error_message     TEXT,
    input_bytes       BIGINT NOT NULL,
    input_excerpt     TEXT NOT NULL,
    output_bytes      BIGINT NOT NULL,
    output_excerpt    TEXT,
    fuel              BIGINT NOT NULL,
    peak_memory_bytes BIGINT NOT NULL,
    wall_time_us      BIGINT NOT NULL,
    log_bytes         BIGINT NOT NULL,
    logs              JSONB NOT NULL,
    queued_at         TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ NOT NULL,
    cost_picodollars  BIGINT NOT NULL,
    correlation_id    TEXT,
    actor_key_id      TEXT,
    idempotency_key   TEXT
);
CREATE INDEX executions_by_tenant ON executions (tenant_id, id);
CREATE INDEX executions_by_agent ON executions (tenant_id, agent_id, id);
CREATE INDEX executions_by_outcome ON executions (tenant_id, outcome, id);
CREATE INDEX executions_by_correlation ON executions (tenant_id, correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX executions_by_finish ON executions (tenant_id, finished_at);

CREATE TABLE audit_events (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    occurred_at   TIMESTAMPTZ NOT NULL,
    actor_key_id  TEXT,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    before        JSONB,
    after         JSONB,
    result        TEXT NOT NULL CHECK (result IN ('ok', 'denied', 'failed')),
    request_id    TEXT,
    client_addr   TEXT,
    user_agent    TEXT
);
CREATE INDEX audit_by_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_by_actor ON audit_events (tenant_id, actor_key_id, id);
CREATE INDEX audit_by_action ON audit_events (tenant_id, action, id);
CREATE INDEX audit_by_resource ON audit_events (tenant_id, resource_type, resource_id, id);

-- The audit trail is append-only, whoever connects.
CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    execution_id TEXT,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'abandoned')),
    response     JSONB,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Row-level security, as defence in depth beneath the application's own tenant
-- scoping: a transaction that sets `corral.tenant_id` sees only that tenant's rows.
-- The host's cross-tenant work (bootstrap, the group-commit writer, operator views)
-- runs with `corral.tenant_id` unset, which these policies allow.
DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'agents', 'agent_versions', 'executions', 'audit_events', 'idempotency_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id)) WITH CHECK (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id))',
            t);
    END LOOP;
END $$;
