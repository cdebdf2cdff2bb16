-- Tenant isolation that fails closed. Until now a connection that set no tenant saw
-- every tenant's rows. Now each row is visible only to a transaction that names its
-- tenant (`corral.tenant_id`), or to one that names an operator-wide path
-- (`corral.operator_wide`: bootstrap, authentication, the group-commit writer, the task
-- queue, housekeeping, operator admin), each set by the host for one transaction
-- (host/src/db/mod.rs, `Scope`). A connection that names neither sees nothing.
DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'agents', 'agent_versions', 'executions', 'audit_events', 'idempotency_keys', 'usage_counters', 'concurrency_scopes', 'concurrency_leases', 'rate_buckets', 'kv_entries', 'agent_config', 'agent_secrets', 'tasks', 'task_dependencies', 'task_attempts'] LOOP
        EXECUTE format('DROP POLICY tenant_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = current_setting(''corral.tenant_id'', true) '
            'OR coalesce(current_setting(''corral.operator_wide'', true), '''') <> '''') '
            'WITH CHECK (tenant_id = current_setting(''corral.tenant_id'', true) '
            'OR coalesce(current_setting(''corral.operator_wide'', true), '''') <> '''')',
            t);
    END LOOP;
END $$;

-- Admission and release name their tenant themselves, so their one round trip stays one.
CREATE OR REPLACE FUNCTION corral_admit(
    p_id TEXT, p_tenant TEXT, p_holder TEXT, p_now TIMESTAMPTZ, p_expires TIMESTAMPTZ,
    p_scopes TEXT[], p_max_concurrency INTEGER[], p_rate DOUBLE PRECISION[],
    p_burst DOUBLE PRECISION[])
RETURNS TABLE (denied_scope TEXT, reason TEXT, retry_after_ms BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER := coalesce(array_length(p_scopes, 1), 0);
    held INTEGER;
    reaped INTEGER;
    available DOUBLE PRECISION;
    last TIMESTAMPTZ;
    remaining DOUBLE PRECISION[] := '{}';
BEGIN
    -- Only this tenant's rows, for the rest of this statement's transaction.
    PERFORM set_config('corral.tenant_id', p_tenant, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. n LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(p_scopes[i], 0));
        IF p_rate[i] IS NOT NULL THEN
            SELECT tokens, updated_at INTO available, last FROM rate_buckets WHERE scope = p_scopes[i];
            IF NOT FOUND THEN
                available := p_burst[i];
            ELSE
                available := least(p_burst[i],
                    available + p_rate[i] * greatest(0, extract(epoch FROM p_now - last)));
            END IF;
            IF available < 1 THEN
                RETURN QUERY SELECT p_scopes[i], 'rate_limited'::TEXT,
                    ceil((1 - available) / p_rate[i] * 1000)::BIGINT;
                RETURN;
            END IF;
            remaining[i] := available - 1;
        END IF;
        IF p_max_concurrency[i] IS NOT NULL THEN
            SELECT in_flight INTO held FROM concurrency_scopes WHERE scope = p_scopes[i];
            held := coalesce(held, 0);
            IF held >= p_max_concurrency[i] THEN
                -- Full: free the slots of leases that expired (their hosts died).
                WITH gone AS (
                    DELETE FROM concurrency_leases
                    WHERE scope = p_scopes[i] AND expires_at <= p_now RETURNING 1)
                SELECT count(*) INTO reaped FROM gone;
                IF reaped > 0 THEN
                    UPDATE concurrency_scopes SET in_flight = in_flight - reaped
                    WHERE scope = p_scopes[i];
                    held := held - reaped;
                END IF;
            END IF;
            IF held >= p_max_concurrency[i] THEN
                -- A slot frees when any holder finishes, which nobody knows in advance.
                RETURN QUERY SELECT p_scopes[i], 'concurrency_limited'::TEXT, 1000::BIGINT;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF p_rate[i] IS NOT NULL THEN
            INSERT INTO rate_buckets (scope, tenant_id, tokens, updated_at)
            VALUES (p_scopes[i], p_tenant, remaining[i], p_now)
            ON CONFLICT (scope) DO UPDATE
                SET tokens = excluded.tokens,
                    updated_at = greatest(rate_buckets.updated_at, excluded.updated_at);
        END IF;
        IF p_max_concurrency[i] IS NOT NULL THEN
            INSERT INTO concurrency_scopes (scope, tenant_id, in_flight)
            VALUES (p_scopes[i], p_tenant, 1)
            ON CONFLICT (scope) DO UPDATE SET in_flight = concurrency_scopes.in_flight + 1;
            INSERT INTO concurrency_leases (id, scope, tenant_id, holder, expires_at)
            VALUES (p_id, p_scopes[i], p_tenant, p_holder, p_expires);
        END IF;
    END LOOP;
END;
$$;
DROP FUNCTION corral_release(TEXT);
-- Gives back an admission's leases (those not already freed by expiry), scope by scope
-- in order, so two releases never wait on each other in a cycle.
CREATE FUNCTION corral_release(p_id TEXT, p_tenant TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    lease RECORD;
BEGIN
    PERFORM set_config('corral.tenant_id', p_tenant, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR lease IN SELECT scope FROM concurrency_leases WHERE id = p_id ORDER BY scope LOOP
        DELETE FROM concurrency_leases WHERE id = p_id AND scope = lease.scope;
        IF FOUND THEN
            UPDATE concurrency_scopes SET in_flight = in_flight - 1 WHERE scope = lease.scope;
        END IF;
    END LOOP;
END;
$$;
