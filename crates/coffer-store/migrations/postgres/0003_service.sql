-- Schema 3. The service (`coffer serve`, docs/SERVICE.md): API tokens, stored as hashes only, and
-- the tenant that owns each service scope (DESIGN §9 F30: ownership is this explicit column,
-- compared for equality, never a prefix of the scope name).
CREATE TABLE coffer_service_tokens (
    id             TEXT    PRIMARY KEY,
    role           TEXT    NOT NULL CHECK (role IN ('tenant', 'admin')),
    tenant         TEXT,
    label          TEXT    NOT NULL,
    secret_hash    BYTEA   NOT NULL,
    created_at_us  BIGINT  NOT NULL,
    expires_at_us  BIGINT,
    revoked_at_us  BIGINT,
    CHECK ((role = 'tenant') = (tenant IS NOT NULL))
);

CREATE TABLE coffer_scope_owners (
    scope          TEXT    PRIMARY KEY REFERENCES coffer_scopes (scope),
    tenant         TEXT    NOT NULL,
    assigned_at_us BIGINT  NOT NULL
);
