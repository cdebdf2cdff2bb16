-- Key-value state of agents (`corral:agent/kv`): one row per key of an agent, scoped to
-- its tenant. Keys compare in byte order (`COLLATE "C"`), as the WIT promises for
-- list-keys and as SQLite's BINARY does. `size_bytes` is the key's plus the value's
-- bytes, what `max_total_bytes` of the grant counts. Expired rows are invisible to the
-- host and removed lazily.
CREATE TABLE kv_entries (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    key        TEXT COLLATE "C" NOT NULL,
    value      BYTEA NOT NULL,
    size_bytes BIGINT NOT NULL,
    expires_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX kv_entries_by_tenant ON kv_entries (tenant_id, agent_id);
CREATE INDEX kv_entries_by_expiry ON kv_entries (agent_id, expires_at) WHERE expires_at IS NOT NULL;

DO $$
BEGIN
    ALTER TABLE kv_entries ENABLE ROW LEVEL SECURITY;
    ALTER TABLE kv_entries FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON kv_entries
        USING (coalesce(current_setting('corral.tenant_id', true), '') IN ('', tenant_id))
        WITH CHECK (coalesce(current_setting('corral.tenant_id', true), '') IN ('', tenant_id));
    -- 0002's default privileges cover this table when the same login migrates; the
    -- grant is for when another one does.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'corral_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON kv_entries TO corral_app;
    END IF;
END $$;
