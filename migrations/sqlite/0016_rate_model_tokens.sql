-- Model-token buckets are kept in memory with SQLite (one host), like the invocation
-- rate's; ../postgres/0016 adds the shared ones. Kept so both trees number alike.
SELECT 1;
