-- Workflows and schedules: the same as ../postgres/0017 without row-level security.
-- See docs/WORKFLOWS.md.
--
-- A workflow is a graph of named steps; each step runs as one task once its
-- dependencies have ended (`workflow_steps.task_id`, unique: a step is enqueued once).
-- `state` of a workflow: running | succeeded | failed | compensating | compensated |
-- cancelled; of a step: pending | running | succeeded | failed | skipped | cancelled;
-- of a step's compensation: NULL (none asked for or not due) | pending | running |
-- succeeded | failed. `completed_seq` orders the steps that succeeded, so compensation
-- runs in reverse completion order.
CREATE TABLE workflow_definitions (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    definition   TEXT NOT NULL,
    actor_key_id TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE workflows (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    definition_name    TEXT,
    definition_version INTEGER,
    definition         TEXT NOT NULL,
    input              TEXT NOT NULL,
    state              TEXT NOT NULL,
    output             TEXT,
    error              TEXT,
    cancel_requested   BOOLEAN NOT NULL DEFAULT FALSE,
    correlation_id     TEXT,
    idempotency_key    TEXT,
    request_hash       TEXT,
    actor_key_id       TEXT,
    schedule_id        TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    finished_at        TEXT
);
CREATE INDEX workflows_by_tenant ON workflows (tenant_id, id);
CREATE UNIQUE INDEX workflows_by_idempotency_key ON workflows (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE workflow_steps (
    workflow_id          TEXT NOT NULL REFERENCES workflows (id),
    name                 TEXT NOT NULL,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    position             INTEGER NOT NULL,
    state                TEXT NOT NULL,
    task_id              TEXT UNIQUE REFERENCES tasks (id),
    output               TEXT,
    error                TEXT,
    completed_seq        INTEGER,
    compensation_state   TEXT,
    compensation_task_id TEXT UNIQUE REFERENCES tasks (id),
    started_at           TEXT,
    finished_at          TEXT,
    PRIMARY KEY (workflow_id, name)
);
-- What the advancers look at: steps (and compensations) whose task may have ended.
CREATE INDEX workflow_steps_running ON workflow_steps (task_id) WHERE state = 'running';
CREATE INDEX workflow_steps_compensating ON workflow_steps (compensation_task_id)
    WHERE compensation_state = 'running';

-- A workflow's step and compensation tasks name their workflow, so the worker that ends
-- one advances the workflow at once (plain tasks have none and cost nothing more).
ALTER TABLE tasks ADD COLUMN workflow_id TEXT;

-- A cron expression in a time zone, and what each occurrence enqueues: a task
-- (`target.agent`, `target.action`) or a run of a stored workflow (`target.workflow`).
-- `next_at` is the next occurrence not yet handled; `missed`: run_once | skip;
-- `overlap`: allow | forbid.
CREATE TABLE schedules (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    target       TEXT NOT NULL,
    missed       TEXT NOT NULL,
    overlap      TEXT NOT NULL,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    next_at      TEXT NOT NULL,
    actor_key_id TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX schedules_by_tenant ON schedules (tenant_id, id);
CREATE INDEX schedules_due ON schedules (next_at) WHERE NOT paused;

-- One row per occurrence handled, exactly once across nodes (the primary key):
-- `outcome` enqueued | skipped_overlap | missed | failed.
CREATE TABLE schedule_occurrences (
    schedule_id   TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    occurrence_at TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    outcome       TEXT NOT NULL,
    task_id       TEXT,
    workflow_id   TEXT,
    error         TEXT,
    node          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (schedule_id, occurrence_at)
);
