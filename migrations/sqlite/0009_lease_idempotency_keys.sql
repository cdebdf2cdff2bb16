-- Leases and expiry of idempotency keys: the same as ../postgres/0009.
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT;
ALTER TABLE idempotency_keys ADD COLUMN lease_expires_at TEXT;
ALTER TABLE idempotency_keys ADD COLUMN expires_at TEXT;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_pending_by_owner ON idempotency_keys (owner) WHERE status = 'pending';
