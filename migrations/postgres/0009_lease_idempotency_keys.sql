-- A pending idempotency key belongs to the node running its request, for as long as
-- that node renews its lease; only a lapsed lease may be taken over. Every key expires
-- (`expires_at`, CORRAL_IDEMPOTENCY_TTL after it was reserved) and is then purged. Keys
-- from before this migration have no expiry and count from `created_at`.
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT;
ALTER TABLE idempotency_keys ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE idempotency_keys ADD COLUMN expires_at TIMESTAMPTZ;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_pending_by_owner ON idempotency_keys (owner) WHERE status = 'pending';
