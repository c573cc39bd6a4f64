-- Coffer key store, schema 1 (SQLite). The PostgreSQL file under ../postgres/ is the same schema
-- with PostgreSQL's type names; tests/schema.rs checks that both define the same tables and columns.
-- Times are microseconds since the Unix epoch from the database clock.

CREATE TABLE coffer_meta (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    store_id       BLOB    NOT NULL CHECK (length(store_id) = 16),
    created_at_us  BIGINT  NOT NULL
);

CREATE TABLE coffer_keks (
    kek_name          TEXT    NOT NULL,
    kek_version       BIGINT  NOT NULL CHECK (kek_version >= 1),
    kind              TEXT    NOT NULL,
    canary_wrapped    BLOB    NOT NULL,
    canary_check      BLOB    NOT NULL,
    registered_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (kek_name, kek_version)
);

CREATE TABLE coffer_scopes (
    scope            TEXT    PRIMARY KEY,
    created_at_us    BIGINT  NOT NULL,
    destroyed_at_us  BIGINT
);

CREATE TABLE coffer_deks (
    scope                TEXT    NOT NULL REFERENCES coffer_scopes (scope),
    version              BIGINT  NOT NULL CHECK (version >= 1),
    key_id               BLOB    NOT NULL CHECK (length(key_id) = 16),
    state                TEXT    NOT NULL
                         CHECK (state IN ('active', 'decrypt-only', 'retired', 'destroyed')),
    wrapped              BLOB,
    kek_name             TEXT    NOT NULL,
    kek_version          BIGINT  NOT NULL,
    wrap_algorithm       TEXT    NOT NULL,
    key_check            BLOB    NOT NULL,
    encryptions          BIGINT  NOT NULL DEFAULT 0 CHECK (encryptions >= 0),
    created_at_us        BIGINT  NOT NULL,
    state_changed_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (scope, version),
    CHECK ((state = 'destroyed') = (wrapped IS NULL))
);

-- The invariant rotation relies on: at most one active version per scope.
CREATE UNIQUE INDEX coffer_deks_one_active ON coffer_deks (scope) WHERE state = 'active';
CREATE INDEX coffer_deks_by_kek ON coffer_deks (kek_name, kek_version);

CREATE TABLE coffer_audit (
    id         BIGINT  PRIMARY KEY,
    at_us      BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,
    operation  TEXT    NOT NULL,
    scope      TEXT,
    version    BIGINT,
    kek        TEXT,
    detail     TEXT    NOT NULL,
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);

CREATE INDEX coffer_audit_by_scope ON coffer_audit (scope, id);
