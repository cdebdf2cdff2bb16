-- Quotas: tenant policies, usage counters that budgets are checked against, and (on
-- Postgres only, where several hosts share the database) the concurrency leases and
-- rate buckets every host admits invocations through.

ALTER TABLE tenants ADD COLUMN policy JSONB NOT NULL DEFAULT '{}';

-- What each scope ('agent:<id>' or 'tenant:<id>') used per UTC day, charged in the
-- same transaction as the execution records. Each group-commit writer adds to its own
-- shard, so concurrent batches never wait on each other's row locks.
CREATE TABLE usage_counters (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    scope       TEXT NOT NULL,
    day         TEXT NOT NULL,
    shard       INTEGER NOT NULL,
    invocations BIGINT NOT NULL,
    fuel        BIGINT NOT NULL,
    picodollars BIGINT NOT NULL,
    PRIMARY KEY (scope, day, shard)
);
CREATE INDEX usage_counters_by_tenant ON usage_counters (tenant_id, day);

-- How many leases each concurrency-limited scope holds: admission reads and bumps this
-- one row instead of counting lease rows, whose deleted versions an index scan by scope
-- would walk until vacuum.
CREATE TABLE concurrency_scopes (
    scope     TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    in_flight INTEGER NOT NULL
);

-- A slot of a concurrency quota, held by one admitted invocation on one host until it
-- releases it or `expires_at` passes (a host that died cannot hold slots forever).
CREATE TABLE concurrency_leases (
    id         TEXT NOT NULL,
    scope      TEXT NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id, scope)
);
CREATE INDEX concurrency_leases_by_scope ON concurrency_leases (scope, expires_at);

-- A token bucket per rate-limited scope.
CREATE TABLE rate_buckets (
    scope      TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['usage_counters', 'concurrency_scopes', 'concurrency_leases', 'rate_buckets'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id)) WITH CHECK (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id))',
            t);
    END LOOP;
END $$;

-- Admits one invocation against the rate and concurrency quotas of its scopes in one
-- round trip: either every scope admits it (a token taken from each bucket, a lease
-- in each concurrency quota) or nothing changes and the first refusing scope is
-- returned. Each scope is locked (a transaction-scoped advisory lock) in the order
-- given; callers pass them sorted, so admissions never wait on each other in a cycle.
-- Leases and tokens need not survive a database crash (a lost lease frees a slot, a
-- lost token refills one), so this commit does not wait for the disk.
CREATE FUNCTION corral_admit(
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

-- Gives back an admission's leases (those not already freed by expiry), scope by scope
-- in order, so two releases never wait on each other in a cycle.
CREATE FUNCTION corral_release(p_id TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    lease RECORD;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR lease IN SELECT scope FROM concurrency_leases WHERE id = p_id ORDER BY scope LOOP
        DELETE FROM concurrency_leases WHERE id = p_id AND scope = lease.scope;
        IF FOUND THEN
            UPDATE concurrency_scopes SET in_flight = in_flight - 1 WHERE scope = lease.scope;
        END IF;
    END LOOP;
END;
$$;
