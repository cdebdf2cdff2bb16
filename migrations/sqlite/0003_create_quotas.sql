-- Quotas: tenant policies and the usage counters budgets are checked against. The same
-- as ../postgres/0003 except concurrency leases and rate buckets: an SQLite file has
-- one host process, which keeps those in memory.

ALTER TABLE tenants ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';

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
