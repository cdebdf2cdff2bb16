-- The same as ../postgres/0018. W3C trace context: the trace each execution ran in, its own span and the span it was
-- asked from; and the span a task was submitted from, which its attempts continue.
ALTER TABLE executions ADD COLUMN trace_id TEXT;
ALTER TABLE executions ADD COLUMN span_id TEXT;
ALTER TABLE executions ADD COLUMN parent_span_id TEXT;
ALTER TABLE tasks ADD COLUMN traceparent TEXT;
