-- Agents' config values and sealed secrets: the same as ../postgres/0005, without
-- row-level security (an SQLite file has one host; every query names its tenant).

CREATE TABLE agent_config (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, name)
);
CREATE INDEX agent_config_by_tenant ON agent_config (tenant_id, agent_id);

CREATE TABLE agent_secrets (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    name       TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    nonce      BLOB NOT NULL,
    key_id     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, name)
);
CREATE INDEX agent_secrets_by_tenant ON agent_secrets (tenant_id, agent_id);
