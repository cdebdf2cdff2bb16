-- Retention: the one way to delete audit events. The purge (running as the login role,
-- not corral_app, which may not touch this table) opens a window — a row here — in its
-- own transaction, deletes only that tenant's events older than it, and closes it.
-- corral_app may read the table (so it sees the schema) but not open a window.
CREATE TABLE audit_purge_windows (
    id        TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    before    TIMESTAMPTZ NOT NULL
);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'corral_app') THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_purge_windows FROM corral_app;
        GRANT SELECT ON audit_purge_windows TO corral_app;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM audit_purge_windows w
        WHERE w.tenant_id = OLD.tenant_id AND OLD.occurred_at < w.before
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
