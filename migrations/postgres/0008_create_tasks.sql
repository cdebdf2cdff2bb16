-- Durable tasks: submitted work that any node's workers claim, run through the
-- invocation pipeline, retry and complete. See docs/TASKS.md.
--
-- `state`: queued | scheduled | blocked | running | retrying | succeeded | failed |
-- cancelled. `attempts` counts attempts started; every write a worker makes about an
-- attempt is fenced on (id, attempts, state = 'running'), so a stale worker can never
-- overwrite a newer attempt. `deps_pending` counts parents that have not succeeded yet;
-- `dependants`, the tasks that wait on this one (none: its end looks for none).
CREATE TABLE tasks (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    agent_id            TEXT NOT NULL,
    agent_name          TEXT NOT NULL,
    action              TEXT NOT NULL,
    input               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    state               TEXT NOT NULL,
    run_at              TIMESTAMPTZ NOT NULL,
    limits              JSONB NOT NULL,
    max_attempts        INTEGER NOT NULL,
    backoff             JSONB NOT NULL,
    retry_timeouts      BOOLEAN NOT NULL,
    wait_for_budget     BOOLEAN NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    deps_pending        INTEGER NOT NULL DEFAULT 0,
    dependants          INTEGER NOT NULL DEFAULT 0,
    correlation_id      TEXT,
    idempotency_key     TEXT,
    request_hash        TEXT,
    actor_key_id        TEXT,
    parent_execution_id TEXT,
    root_execution_id   TEXT,
    lease_owner         TEXT,
    lease_expires_at    TIMESTAMPTZ,
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
    outcome             TEXT,
    result              TEXT,
    error               JSONB,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ
);
-- What workers claim: waiting tasks that may start, highest priority first, then oldest.
CREATE INDEX tasks_ready ON tasks (priority DESC, id)
    WHERE state IN ('queued', 'scheduled', 'retrying');
-- Leases to take over when a node dies.
CREATE INDEX tasks_leased ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_by_tenant ON tasks (tenant_id, id);
CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- `task_id` waits for `depends_on` to succeed.
CREATE TABLE task_dependencies (
    task_id    TEXT NOT NULL REFERENCES tasks (id),
    depends_on TEXT NOT NULL REFERENCES tasks (id),
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_by_parent ON task_dependencies (depends_on);

-- One row per attempt started, with its outcome once known (exactly once): the
-- execution's outcome, or `host_failure` / `node_lost` / `budget_exhausted` for an
-- attempt that left no execution.
CREATE TABLE task_attempts (
    task_id      TEXT NOT NULL REFERENCES tasks (id),
    attempt      INTEGER NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    execution_id TEXT NOT NULL,
    node         TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    outcome      TEXT,
    PRIMARY KEY (task_id, attempt)
);

ALTER TABLE executions ADD COLUMN task_id TEXT;
ALTER TABLE executions ADD COLUMN attempt INTEGER;
CREATE INDEX executions_by_task ON executions (task_id) WHERE task_id IS NOT NULL;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['tasks', 'task_dependencies', 'task_attempts'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id)) WITH CHECK (coalesce(current_setting(''corral.tenant_id'', true), '''') IN ('''', tenant_id))',
            t);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'corral_app') THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO corral_app', t);
        END IF;
    END LOOP;
END $$;
