-- Schema 4. Scope listing at millions of scopes (docs/KEYS.md, "Scale"). SQLite compares text
-- with its BINARY collation, byte order of UTF-8, which is code point order: the primary key's
-- index already serves a prefix range. Nothing to add; the migration keeps both schemas at
-- one version.
SELECT 1;
