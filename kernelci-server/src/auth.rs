//! Authentication: upstream-compatible JWTs, password hashes, revocable API tokens.
//!
//! - Login tokens are HS256 JWTs with upstream's claims (`sub`, `aud: ["fastapi-users:auth"]`,
//!   `exp`), signed with `SECRET_KEY`; verification falls back to `UNIFIED_SECRET`. Tokens we
//!   issue also carry a `jti`, so they can be revoked (upstream ignores extra claims).
//! - Password hashes: argon2 (`$argon2id$`, as fastapi-users/pwdlib write them) and bcrypt
//!   (`$2b$`, as upstream's admin bootstrap writes them) both verify; a bcrypt hash is re-hashed
//!   to argon2 on the next successful login, as upstream does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use kernelci::models::{ObjectId, Timestamp, User};
use kernelci::store::SharedStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{ApiError, Request};

/// The audience of login tokens.
pub const AUTH_AUDIENCE: &str = "fastapi-users:auth";
/// The audience of password-reset tokens.
pub const RESET_AUDIENCE: &str = "fastapi-users:reset";
const REVOKED_NS: &str = "kci:revoked-tokens";
const TOKENS_NS: &str = "kci:api-tokens";

/// JWT claims we read and write.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience: a list (fastapi-users) or a single string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Value>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Invite tokens: `invite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Invite tokens: the invited e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Reset tokens: fingerprint of the password hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_fgpt: Option<String>,
}

/// Token signing and checking, password hashing, and the current user.
#[derive(Clone)]
pub struct Auth {
    secret: Arc<Vec<u8>>,
    unified: Option<Arc<Vec<u8>>>,
    /// Lifetime of login tokens, seconds.
    pub access_ttl: u64,
    /// Lifetime of invite tokens, seconds.
    pub invite_ttl: u64,
    store: SharedStore,
    /// Recently verified login tokens → their claims (see [`AUTH_CACHE_TTL`]).
    cache: Arc<std::sync::Mutex<HashMap<String, Cached>>>,
}

/// How long a verified token's claims are reused without checking its signature again. Only
/// the signature check is skipped: the revocation list and the user are read on every request,
/// so a revoked token or a deactivated user is refused at once, even when another replica (or
/// a direct store write) made the change. (Caching the user too made such changes late.)
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);
const AUTH_CACHE_MAX: usize = 10_000;

#[derive(Clone)]
struct Cached {
    claims: Claims,
    at: std::time::Instant,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    Timestamp::now().micros() / 1_000_000
}

/// `n` random bytes as hex; no randomness is an error (500), never a guessable value.
fn random_hex(n: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(ApiError::internal)?;
    Ok(hex::encode(buf))
}

fn argon2() -> Argon2<'static> {
    // pwdlib's (argon2-cffi's) defaults, so our hashes look like upstream's.
    let params = Params::new(65536, 3, 4, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with argon2id (blocking: ~0.1 s; call from a blocking task).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(ApiError::internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Whether `password` matches `hash` (argon2 or bcrypt). Unknown formats never match.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if hash.starts_with("$2") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether a stored hash should be replaced by a fresh argon2 one.
pub fn needs_rehash(hash: &str) -> bool {
    !hash.starts_with("$argon2")
}

/// Runs password hashing off the async threads.
pub async fn hash_password_async(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
}

/// Runs password verification off the async threads.
pub async fn verify_password_async(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

/// Metadata of an API token, as listed by `GET /user/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token id (`jti`).
    pub jti: String,
    /// The owner's username.
    pub username: String,
    /// A label chosen at creation.
    pub name: String,
    /// When it was made.
    pub created: Timestamp,
    /// When it expires, if ever.
    pub expires: Option<Timestamp>,
}

impl Auth {
    /// Signing with `secret`, accepting `unified` too.
    pub fn new(
        secret: &str,
        unified: Option<&str>,
        access_ttl: u64,
        invite_ttl: u64,
        store: SharedStore,
    ) -> Auth {
        Auth {
            secret: Arc::new(secret.as_bytes().to_vec()),
            unified: unified
                .filter(|u| !u.is_empty())
                .map(|u| Arc::new(u.as_bytes().to_vec())),
            access_ttl,
            invite_ttl,
            store,
            cache: Arc::default(),
        }
    }

    /// Forgets every cached token → user answer (after a change to users, groups or tokens).
    pub fn forget_cached(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    fn cached(&self, token: &str) -> Option<Claims> {
        let c = self.cache.lock().ok()?;
        let hit = c.get(token)?;
        let fresh =
            hit.at.elapsed() < AUTH_CACHE_TTL && hit.claims.exp.is_none_or(|e| e > now_secs());
        fresh.then(|| hit.claims.clone())
    }

    fn remember(&self, token: &str, claims: &Claims) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= AUTH_CACHE_MAX {
                c.clear();
            }
            c.insert(
                token.to_owned(),
                Cached {
                    claims: claims.clone(),
                    at: std::time::Instant::now(),
                },
            );
        }
    }

    /// Signs `claims` with the primary secret.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(ApiError::internal)
    }

    /// A login token for `user`, valid `ttl` seconds.
    pub fn login_token(&self, user: &User, ttl: u64) -> Result<(String, Claims), ApiError> {
        let now = now_secs();
        let claims = Claims {
            sub: Some(user.id.to_hex()),
            aud: Some(Value::from(vec![AUTH_AUDIENCE])),
            exp: Some(now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))),
            iat: Some(now),
            jti: Some(random_hex(16)?),
            ..Default::default()
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// Decodes a token signed with either secret, checking `aud` (when given) and `exp`.
    pub fn decode(&self, token: &str, audience: Option<&str>) -> Option<Claims> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        let mut required: HashSet<String> = HashSet::new();
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required;
        let keys = std::iter::once(&self.secret).chain(self.unified.as_ref());
        for key in keys {
            if let Ok(data) = decode::<Claims>(token, &DecodingKey::from_secret(key), &validation) {
                return Some(data.claims);
            }
        }
        None
    }

    /// The bearer token of a request, if any.
    pub fn bearer(req: &Request) -> Option<&str> {
        let h = req.header("authorization")?;
        let (scheme, token) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// The active user behind the request's token (401 otherwise), with the token's claims.
    pub async fn user_and_claims(&self, req: &Request) -> Result<(User, Claims), ApiError> {
        let token = Auth::bearer(req).ok_or_else(ApiError::unauthorized)?;
        let claims = match self.cached(token) {
            Some(c) => c,
            None => {
                let c = self
                    .decode(token, Some(AUTH_AUDIENCE))
                    .ok_or_else(ApiError::unauthorized)?;
                self.remember(token, &c);
                c
            }
        };
        let id = claims
            .sub
            .as_deref()
            .and_then(|s| ObjectId::parse_str(s).ok())
            .ok_or_else(ApiError::unauthorized)?;
        if let Some(jti) = &claims.jti
            && self.store.kv_get(REVOKED_NS, jti).await?.is_some()
        {
            return Err(ApiError::unauthorized());
        }
        let user = self
            .store
            .get_user(id)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if !user.is_active {
            return Err(ApiError::unauthorized());
        }
        Ok((user, claims))
    }

    /// The active user (upstream's `get_current_user`).
    pub async fn user(&self, req: &Request) -> Result<User, ApiError> {
        self.user_and_claims(req).await.map(|(u, _)| u)
    }

    /// An active, verified user (403 when not verified).
    pub async fn verified_user(&self, req: &Request) -> Result<User, ApiError> {
        let user = self.user(req).await?;
        if !user.is_verified {
            return Err(ApiError::forbidden());
        }
        Ok(user)
    }

    /// An active superuser (403 otherwise).
    pub async fn superuser(&self, req: &Request) -> Result<User, ApiError> {
        let user = self.user(req).await?;
        if !user.is_superuser {
            return Err(ApiError::forbidden());
        }
        Ok(user)
    }

    /// Revokes a token id: later requests with it get 401.
    pub async fn revoke(&self, jti: &str) -> Result<(), ApiError> {
        self.forget_cached();
        self.store
            .kv_set(REVOKED_NS, jti, &Timestamp::now().to_string())
            .await?;
        self.store.kv_delete(TOKENS_NS, jti).await?;
        self.forget_cached();
        Ok(())
    }

    /// Makes a named API token for `user`, valid `ttl` seconds (`None`: the login lifetime).
    pub async fn create_api_token(
        &self,
        user: &User,
        name: &str,
        ttl: Option<u64>,
    ) -> Result<(String, TokenInfo), ApiError> {
        let ttl = ttl.unwrap_or(self.access_ttl);
        let (token, claims) = self.login_token(user, ttl)?;
        let info = TokenInfo {
            jti: claims.jti.clone().unwrap_or_default(),
            username: user.username.clone(),
            name: name.to_owned(),
            created: Timestamp::now(),
            expires: claims
                .exp
                .and_then(|e| Timestamp::from_micros(e.saturating_mul(1_000_000))),
        };
        let doc = serde_json::to_string(&info).map_err(ApiError::internal)?;
        self.store.kv_set(TOKENS_NS, &info.jti, &doc).await?;
        Ok((token, info))
    }

    /// Metadata of an API token.
    pub async fn token_info(&self, jti: &str) -> Result<Option<TokenInfo>, ApiError> {
        Ok(match self.store.kv_get(TOKENS_NS, jti).await? {
            Some(doc) => serde_json::from_str(&doc).ok(),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_hashes_verify() {
        // bcrypt as upstream's admin bootstrap writes it; argon2id as pwdlib writes it.
        let bcrypt_hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
        assert!(verify_password("s3cret", &bcrypt_hash));
        assert!(!verify_password("wrong", &bcrypt_hash));
        assert!(needs_rehash(&bcrypt_hash));
        let argon = hash_password("s3cret").expect("argon2");
        assert!(
            argon.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"),
            "{argon}"
        );
        assert!(verify_password("s3cret", &argon));
        assert!(!verify_password("s3cret2", &argon));
        assert!(!needs_rehash(&argon));
        assert!(!verify_password("x", "not a hash"));
    }
}
