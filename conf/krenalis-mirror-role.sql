-- A PostgreSQL role for `krenalis-keys mirror`: it can log in and read the columns of SPEC
-- §11.1, nothing else (no connection settings, no account tokens). Run it as a superuser (or
-- the owner of the Krenalis schema), on the primary:
--
--   psql -v schema=public -v role=krenalis_edge -f conf/krenalis-mirror-role.sql DBNAME
--
-- then give the role a password (\password krenalis_edge) and each Apache node a ~/.pgpass
-- line for it, and allow it in pg_hba.conf. Replicas inherit the role and the grants.
CREATE ROLE :"role" LOGIN;
GRANT USAGE ON SCHEMA :"schema" TO :"role";
GRANT SELECT (kms_encrypted_api_key_pepper) ON :"schema".metadata TO :"role";
GRANT SELECT (id, name, enabled) ON :"schema".organizations TO :"role";
GRANT SELECT (id, organization, name) ON :"schema".workspaces TO :"role";
GRANT SELECT (id, workspace, name, role, strategy) ON :"schema".connections TO :"role";
GRANT SELECT (id, organization, workspace, name, type, hmac, hint, created_at)
    ON :"schema".access_keys TO :"role";
GRANT SELECT (connection, key, created_at) ON :"schema".event_write_keys TO :"role";
GRANT SELECT (version, name, payload) ON :"schema".notifications TO :"role";
-- The database's identity (the same on the primary and its streaming replicas): a store that
-- mirrored another database is rebuilt instead of followed.
GRANT EXECUTE ON FUNCTION pg_control_system() TO :"role";
