-- Schema 2. Restores from backups (docs/KEYS.md §7.7): `coffer keys restored` bumps the store epoch, which
-- L2 entry names carry (so entries cached before the restore are never read again), and sets a
-- floor under every scope's next version number, so versions created after the backup was taken
-- (and lost with it) are never numbered again.
ALTER TABLE coffer_meta ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE coffer_scopes ADD COLUMN version_floor BIGINT NOT NULL DEFAULT 0;

-- The index on (kek_name, kek_version) from schema 1 helps no query (rotate-kek looks for DEKs *not*
-- under a KEK), and with stale statistics PostgreSQL picked it over the primary key for the
-- re-wrap UPDATE, scanning every DEK of the old KEK per row (measured: 22 ms per UPDATE at 100 000
-- DEKs). Dropped.
DROP INDEX coffer_deks_by_kek;
