-- Key-value state of agents: the same as ../postgres/0004 without row-level security.
-- TEXT compares in byte order (BINARY) here, as `COLLATE "C"` does there.
CREATE TABLE kv_entries (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    size_bytes BIGINT NOT NULL,
    expires_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX kv_entries_by_tenant ON kv_entries (tenant_id, agent_id);
CREATE INDEX kv_entries_by_expiry ON kv_entries (agent_id, expires_at) WHERE expires_at IS NOT NULL;
