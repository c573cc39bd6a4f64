//! API tokens and scope owners, kept in the key store's database (schema 3).
//!
//! A token reads `cft_<id>_<secret>`: a 16-hex-digit id, by which it is looked up, and 32 random
//! bytes in base64url. Only `SHA-256("coffer/token/v1" ‖ token)` is stored; the token is shown
//! once, when created. A fast hash is enough because the secret is 256 random bits, not a
//! password. A tenant token reaches only the scopes whose owner column names its tenant; an admin
//! token administers keys and reaches no data.

use std::fmt;

use coffer_store::SqlStore;
use serde::Serialize;
use sqlx::Row as _;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::rfc3339;

/// Token prefix, so a leaked token is recognisable to secret scanners.
pub const PREFIX: &str = "cft_";

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Data operations on the scopes this tenant owns.
    Tenant(String),
    /// Key administration (scopes, rotation, destruction); no data.
    Admin,
}

/// A token as stored (no secret, only its hash).
#[derive(Clone, Debug)]
pub struct TokenRecord {
    /// Public id.
    pub id: String,
    /// Role and tenant.
    pub role: Role,
    /// The operator's label.
    pub label: String,
    /// Hash of the whole token.
    pub secret_hash: Vec<u8>,
    /// Created (µs since the epoch, database clock).
    pub created_at_us: i64,
    /// Expires (µs), if it does.
    pub expires_at_us: Option<i64>,
    /// Revoked (µs), if it was.
    pub revoked_at_us: Option<i64>,
}

/// A token as `coffer tokens list` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// `tenant` or `admin`.
    pub role: String,
    /// The tenant (tenant tokens).
    pub tenant: Option<String>,
    /// Label.
    pub label: String,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Expiry, RFC 3339.
    pub expires_at: Option<String>,
    /// Revocation, RFC 3339.
    pub revoked_at: Option<String>,
    /// Whether it has expired (by the key store's clock).
    pub expired: bool,
}

/// A new token's secret text: shown once, zeroized on drop, never in `Debug`.
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// The token text, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// The stored hash of a token text.
pub fn hash(token: &str) -> Vec<u8> {
    coffer_core::token::hash_token(coffer_core::token::SERVICE_DOMAIN, token).to_vec()
}

/// The id part of a token text, if it has the token shape.
pub fn parse_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(id)
}

/// Whether `token` is the one `record` was made for (constant time).
pub fn verify(record: &TokenRecord, token: &str) -> bool {
    coffer_core::token::verify_token(
        coffer_core::token::SERVICE_DOMAIN,
        token,
        &record.secret_hash,
    )
}

fn db(e: sqlx::Error) -> coffer_keys::Error {
    coffer_keys::Error::store(e)
}

/// Token and owner queries on the key store's database.
#[derive(Clone, Debug)]
pub struct TokenStore {
    store: SqlStore,
    /// Writes the audit records of token changes into the keyed trail.
    keyring: coffer_keys::Keyring,
    actor: String,
}

impl TokenStore {
    /// Uses the key store's connection pool; token changes are audited through `keyring` (the
    /// audit trail is keyed, so recording needs the KEK) with the operator (`user@host`) as
    /// actor.
    pub fn new(store: SqlStore, keyring: coffer_keys::Keyring) -> Self {
        TokenStore {
            store,
            keyring,
            actor: coffer_keys::config::default_actor(),
        }
    }

    /// The same, with another actor in the audit records of token changes.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Appends an audit record of a token change (never the token or its hash).
    async fn audit(&self, detail: String) -> coffer_keys::Result<()> {
        let event =
            coffer_keys::AuditEvent::new(self.actor.clone(), coffer_keys::Operation::AdminRequest)
                .detail(detail);
        self.keyring.record(event).await
    }

    async fn now_us(&self) -> coffer_keys::Result<i64> {
        use coffer_keys::KeyStore as _;
        self.store.now_us().await
    }

    /// Creates a token; the secret is returned once and stored only as a hash. A lifetime of
    /// zero is refused (such a token would be expired when handed out). The creation is audited:
    /// actor, token id, role, tenant and expiry.
    pub async fn create(
        &self,
        role: &Role,
        label: &str,
        ttl: Option<std::time::Duration>,
    ) -> coffer_keys::Result<(TokenInfo, TokenSecret)> {
        if ttl.is_some_and(|t| t.as_micros() == 0) {
            return Err(coffer_keys::Error::config(
                "a token's lifetime must be longer than 0s (e.g. 12h, 90d); leave the expiry \
                 out for a token that never expires",
            ));
        }
        let id = hex::encode(coffer_core::digest::random_array::<8>()?);
        let secret = coffer_core::token::random_token(32)?;
        let text = Zeroizing::new(format!("{PREFIX}{id}_{}", secret.as_str()));
        let now = self.now_us().await?;
        let expires =
            ttl.map(|t| now.saturating_add(i64::try_from(t.as_micros()).unwrap_or(i64::MAX)));
        let (role_name, tenant) = match role {
            Role::Admin => ("admin", None),
            Role::Tenant(t) => ("tenant", Some(t.clone())),
        };
        // Audited first: a token never exists without its record.
        self.audit(format!(
            "token-create id={id} role={role_name} tenant={} expires={}",
            tenant.as_deref().unwrap_or("-"),
            expires.map(rfc3339).unwrap_or_else(|| "never".to_owned())
        ))
        .await?;
        sqlx::query(
            "INSERT INTO coffer_service_tokens \
             (id, role, tenant, label, secret_hash, created_at_us, expires_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(role_name)
        .bind(tenant.clone())
        .bind(label)
        .bind(hash(&text))
        .bind(now)
        .bind(expires)
        .execute(self.store.pool())
        .await
        .map_err(db)?;
        let info = TokenInfo {
            id,
            role: role_name.to_owned(),
            tenant,
            label: label.to_owned(),
            created_at: rfc3339(now),
            expires_at: expires.map(rfc3339),
            revoked_at: None,
            expired: false,
        };
        Ok((info, TokenSecret(text)))
    }

    /// One token by id.
    pub async fn get(&self, id: &str) -> coffer_keys::Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT id, role, tenant, label, secret_hash, created_at_us, expires_at_us, \
             revoked_at_us FROM coffer_service_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await
        .map_err(db)?;
        row.map(|r| record(&r)).transpose()
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> coffer_keys::Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, role, tenant, label, secret_hash, created_at_us, expires_at_us, \
             revoked_at_us FROM coffer_service_tokens ORDER BY created_at_us, id",
        )
        .fetch_all(self.store.pool())
        .await
        .map_err(db)?;
        let now = self.now_us().await?;
        rows.iter()
            .map(|r| {
                let t = record(r)?;
                let expired = t.expires_at_us.is_some_and(|e| e <= now);
                let (role, tenant) = match t.role {
                    Role::Admin => ("admin".to_owned(), None),
                    Role::Tenant(x) => ("tenant".to_owned(), Some(x)),
                };
                Ok(TokenInfo {
                    id: t.id,
                    role,
                    tenant,
                    label: t.label,
                    created_at: rfc3339(t.created_at_us),
                    expires_at: t.expires_at_us.map(rfc3339),
                    revoked_at: t.revoked_at_us.map(rfc3339),
                    expired,
                })
            })
            .collect()
    }

    /// Revokes a token; `false` if there is no such token or it was revoked already.
    pub async fn revoke(&self, id: &str) -> coffer_keys::Result<bool> {
        let now = self.now_us().await?;
        let done = sqlx::query(
            "UPDATE coffer_service_tokens SET revoked_at_us = $1 \
             WHERE id = $2 AND revoked_at_us IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.store.pool())
        .await
        .map_err(db)?;
        let revoked = done.rows_affected() == 1;
        if revoked {
            let tenant = self.get(id).await?.and_then(|r| match r.role {
                Role::Tenant(t) => Some(t),
                Role::Admin => None,
            });
            // The revocation stands even if its record cannot be written.
            if let Err(e) = self
                .audit(format!(
                    "token-revoke id={id} tenant={}",
                    tenant.as_deref().unwrap_or("-")
                ))
                .await
            {
                tracing::error!(error = %e, token_id = %id, "token revoked, but its audit record could not be written");
            }
        }
        Ok(revoked)
    }

    /// The tenant that owns a scope, if one does.
    pub async fn owner(&self, scope: &str) -> coffer_keys::Result<Option<String>> {
        let row = sqlx::query("SELECT tenant FROM coffer_scope_owners WHERE scope = $1")
            .bind(scope)
            .fetch_optional(self.store.pool())
            .await
            .map_err(db)?;
        row.map(|r| r.try_get::<String, _>(0).map_err(db))
            .transpose()
    }

    /// Gives an unowned scope to a tenant; returns the owner afterwards (another tenant's if
    /// the scope was owned already: ownership never changes).
    pub async fn assign(&self, scope: &str, tenant: &str) -> coffer_keys::Result<String> {
        let now = self.now_us().await?;
        sqlx::query(
            "INSERT INTO coffer_scope_owners (scope, tenant, assigned_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (scope) DO NOTHING",
        )
        .bind(scope)
        .bind(tenant)
        .bind(now)
        .execute(self.store.pool())
        .await
        .map_err(db)?;
        self.owner(scope)
            .await?
            .ok_or_else(|| coffer_keys::Error::store("scope owner vanished after insert"))
    }

    /// Every owned scope with its tenant.
    pub async fn owners(&self) -> coffer_keys::Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT scope, tenant FROM coffer_scope_owners ORDER BY scope")
            .fetch_all(self.store.pool())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .collect()
    }
}

fn record(r: &sqlx::any::AnyRow) -> coffer_keys::Result<TokenRecord> {
    let role: String = r.try_get("role").map_err(db)?;
    let tenant: Option<String> = r.try_get("tenant").map_err(db)?;
    let role = match (role.as_str(), tenant) {
        ("admin", None) => Role::Admin,
        ("tenant", Some(t)) => Role::Tenant(t),
        _ => return Err(coffer_keys::Error::store("malformed token row")),
    };
    Ok(TokenRecord {
        id: r.try_get("id").map_err(db)?,
        role,
        label: r.try_get("label").map_err(db)?,
        secret_hash: r.try_get("secret_hash").map_err(db)?,
        created_at_us: r.try_get("created_at_us").map_err(db)?,
        expires_at_us: r.try_get("expires_at_us").map_err(db)?,
        revoked_at_us: r.try_get("revoked_at_us").map_err(db)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn token_shape() {
        let id = "0123456789abcdef";
        let t = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(parse_id(&t), Some(id));
        assert_eq!(parse_id("Bearer x"), None);
        assert_eq!(parse_id(&t[..t.len() - 1]), None);
        assert_eq!(parse_id(&t.replace("cft_", "cfx_")), None);
        let rec = TokenRecord {
            id: id.into(),
            role: Role::Admin,
            label: String::new(),
            secret_hash: hash(&t),
            created_at_us: 0,
            expires_at_us: None,
            revoked_at_us: None,
        };
        assert!(verify(&rec, &t));
        let mut other = t.clone();
        let last = other.pop();
        other.push(if last == Some('A') { 'B' } else { 'A' });
        assert!(!verify(&rec, &other));
    }
}
