-- Agents' config values (plain text, readable by the agent they are set on) and
-- secrets (sealed with the server's key: XChaCha20-Poly1305, a fresh nonce per write,
-- the agent id and name as associated data; see host/src/secrets.rs). Rows belong to
-- an agent id, so a later agent that reuses a deleted agent's name starts empty.

CREATE TABLE agent_config (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, name)
);
CREATE INDEX agent_config_by_tenant ON agent_config (tenant_id, agent_id);

CREATE TABLE agent_secrets (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    name       TEXT NOT NULL,
    ciphertext BYTEA NOT NULL,
    nonce      BYTEA NOT NULL,
    -- Which key sealed it (a hash naming the key, not the key).
    key_id     TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, name)
);
CREATE INDEX agent_secrets_by_tenant ON agent_secrets (tenant_id, agent_id);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['agent_config', 'agent_secrets'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id)) WITH CHECK (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id))',
            t);
    END LOOP;
END $$;
