-- Retention: the same as ../postgres/0011 (SQLite has no roles: one process owns it).
CREATE TABLE audit_purge_windows (
    id        TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    before    TEXT NOT NULL
);
DROP TRIGGER audit_events_no_delete;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (
    SELECT 1 FROM audit_purge_windows w
    WHERE w.tenant_id = OLD.tenant_id AND OLD.occurred_at < w.before
)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
