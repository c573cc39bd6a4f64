-- Schema 4. Scope listing at millions of scopes (docs/KEYS.md, "Scale"): `coffer keys list
-- --prefix` and subject erasure read one range of scope names in code point order, which is
-- what COLLATE "C" compares. The primary key's index follows the database's collation, which
-- for most locales neither keeps a prefix's names together nor orders them by code point.
CREATE INDEX coffer_scopes_by_code_point ON coffer_scopes (scope COLLATE "C");
