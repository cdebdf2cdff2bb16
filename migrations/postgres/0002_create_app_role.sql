-- The role the host's connections act as (`SET ROLE corral_app` after connecting), so
-- row-level security applies even when the login user is a superuser or owns the
-- tables. Creating a role needs CREATEROLE; where the login user lacks it, this is
-- skipped and the host runs as the login user (still subject to FORCE'd RLS as owner).
DO $$
BEGIN
    CREATE ROLE corral_app NOLOGIN;
EXCEPTION
    WHEN duplicate_object THEN NULL;
    WHEN insufficient_privilege THEN RAISE NOTICE 'cannot create role corral_app; row-level security relies on the login role';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'corral_app') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA public TO corral_app';
        EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO corral_app';
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO corral_app';
        -- The audit trail is append-only for the host, on top of its trigger.
        EXECUTE 'REVOKE UPDATE, DELETE ON audit_events FROM corral_app';
        BEGIN
            EXECUTE format('GRANT corral_app TO %I', current_user);
        EXCEPTION WHEN others THEN NULL;
        END;
    END IF;
END $$;
