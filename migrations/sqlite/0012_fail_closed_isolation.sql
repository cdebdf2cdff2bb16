-- Row-level security is Postgres's (../postgres/0012): SQLite has no roles and one
-- process owns the file, so nothing changes here. Kept so both trees number alike.
SELECT 1;
