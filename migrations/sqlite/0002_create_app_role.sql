-- Postgres creates the `corral_app` role here (see ../postgres/0002). SQLite has no
-- roles: a single process owns the file, and tenant scoping is the application's.
SELECT 1;
