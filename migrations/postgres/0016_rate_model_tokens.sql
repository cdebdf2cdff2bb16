-- Model tokens per minute: a bucket per scope in rate_buckets (scope 'tokens:agent:<id>'
-- or 'tokens:tenant:<id>'), shared by every host. A call takes the same amount from each
-- of its scopes — as much of p_want as all have, at least p_least — or nothing, and says
-- how long until p_least would be there. Its unused tokens are returned after it.
CREATE FUNCTION corral_take_tokens(
    p_tenant TEXT, p_scopes TEXT[], p_per_second DOUBLE PRECISION[],
    p_burst DOUBLE PRECISION[], p_want DOUBLE PRECISION, p_least DOUBLE PRECISION,
    p_now TIMESTAMPTZ)
RETURNS TABLE (taken DOUBLE PRECISION, retry_after_ms BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER := coalesce(array_length(p_scopes, 1), 0);
    available DOUBLE PRECISION[] := '{}';
    have DOUBLE PRECISION;
    last TIMESTAMPTZ;
    amount DOUBLE PRECISION := p_want;
    wait_ms BIGINT := 0;
BEGIN
    PERFORM set_config('corral.tenant_id', p_tenant, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. n LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(p_scopes[i], 0));
        SELECT b.tokens, b.updated_at INTO have, last FROM rate_buckets b WHERE b.scope = p_scopes[i];
        IF NOT FOUND THEN
            have := p_burst[i];
        ELSE
            have := least(p_burst[i],
                have + p_per_second[i] * greatest(0, extract(epoch FROM p_now - last)));
        END IF;
        available[i] := have;
        amount := least(amount, floor(have));
        IF have < p_least THEN
            wait_ms := greatest(wait_ms, ceil((p_least - have) / p_per_second[i] * 1000)::BIGINT);
        END IF;
    END LOOP;
    IF wait_ms > 0 THEN
        RETURN QUERY SELECT 0::DOUBLE PRECISION, wait_ms;
        RETURN;
    END IF;
    FOR i IN 1 .. n LOOP
        INSERT INTO rate_buckets (scope, tenant_id, tokens, updated_at)
        VALUES (p_scopes[i], p_tenant, available[i] - amount, p_now)
        ON CONFLICT (scope) DO UPDATE
            SET tokens = excluded.tokens,
                updated_at = greatest(rate_buckets.updated_at, excluded.updated_at);
    END LOOP;
    RETURN QUERY SELECT amount, 0::BIGINT;
END;
$$;

CREATE FUNCTION corral_return_tokens(
    p_tenant TEXT, p_scopes TEXT[], p_burst DOUBLE PRECISION[], p_amount DOUBLE PRECISION)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('corral.tenant_id', p_tenant, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. coalesce(array_length(p_scopes, 1), 0) LOOP
        UPDATE rate_buckets SET tokens = least(p_burst[i], tokens + p_amount)
        WHERE scope = p_scopes[i];
    END LOOP;
END;
$$;
