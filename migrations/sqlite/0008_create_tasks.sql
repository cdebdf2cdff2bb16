-- Durable tasks: the same as ../postgres/0008 without row-level security.
CREATE TABLE tasks (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    agent_id            TEXT NOT NULL,
    agent_name          TEXT NOT NULL,
    action              TEXT NOT NULL,
    input               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    state               TEXT NOT NULL,
    run_at              TEXT NOT NULL,
    limits              TEXT NOT NULL,
    max_attempts        INTEGER NOT NULL,
    backoff             TEXT NOT NULL,
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
    lease_expires_at    TEXT,
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
    outcome             TEXT,
    result              TEXT,
    error               TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    finished_at         TEXT
);
CREATE INDEX tasks_ready ON tasks (priority DESC, id)
    WHERE state IN ('queued', 'scheduled', 'retrying');
CREATE INDEX tasks_leased ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_by_tenant ON tasks (tenant_id, id);
CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_dependencies (
    task_id    TEXT NOT NULL REFERENCES tasks (id),
    depends_on TEXT NOT NULL REFERENCES tasks (id),
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_by_parent ON task_dependencies (depends_on);

CREATE TABLE task_attempts (
    task_id      TEXT NOT NULL REFERENCES tasks (id),
    attempt      INTEGER NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    execution_id TEXT NOT NULL,
    node         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT,
    PRIMARY KEY (task_id, attempt)
);

ALTER TABLE executions ADD COLUMN task_id TEXT;
ALTER TABLE executions ADD COLUMN attempt INTEGER;
CREATE INDEX executions_by_task ON executions (task_id) WHERE task_id IS NOT NULL;
