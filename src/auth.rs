//! Token verification (HS256 secret, or an RS256/ES256 public key) and minting for
//! `beckon token`. Expiry is checked against the injected [`Clock`], not inside the JWT
//! library, so tests on paused time see tokens expire.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config::JwtConfig;

/// The claims Beckon reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch. Absent = no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Trusted attributes merged into the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// User id.
    pub user: String,
    /// Expiry in epoch seconds.
    pub exp: Option<i64>,
    /// Trusted attributes.
    pub attributes: Map<String, Value>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// Bad signature, wrong algorithm, malformed, or no `sub`: close 4001.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// `exp` passed (beyond the leeway): close 4002.
    #[error("token expired")]
    Expired,
}

/// Verifies tokens with the configured key.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    leeway_secs: i64,
    clock: Clock,
}

impl Authenticator {
    /// Builds the verifier from config; fails with a readable message on a bad key.
    pub fn new(cfg: &JwtConfig, leeway_secs: i64, clock: Clock) -> Result<Self, String> {
        let (key, alg) = match (&cfg.public_key_file, &cfg.secret) {
            (Some(path), _) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("jwt public key {}: {e}", path.display()))?;
                match cfg.algorithm.as_deref().unwrap_or("RS256") {
                    "RS256" => (
                        DecodingKey::from_rsa_pem(&pem).map_err(|e| format!("RS256 key: {e}"))?,
                        Algorithm::RS256,
                    ),
                    "ES256" => (
                        DecodingKey::from_ec_pem(&pem).map_err(|e| format!("ES256 key: {e}"))?,
                        Algorithm::ES256,
                    ),
                    other => return Err(format!("jwt.algorithm `{other}`: use RS256 or ES256")),
                }
            }
            (None, Some(secret)) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, None) => return Err("no JWT secret or public key configured".into()),
        };
        let mut validation = Validation::new(alg);
        // Expiry is ours to check against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(Authenticator {
            key,
            validation,
            leeway_secs,
            clock,
        })
    }

    /// Verifies signature, algorithm, `sub` and `exp`.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let user = claims
            .sub
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| {
                AuthError::Invalid("`sub` (user id) is missing, empty or over 256 bytes".into())
            })?;
        if let Some(exp) = claims.exp {
            if self.clock.now_secs() > exp + self.leeway_secs {
                return Err(AuthError::Expired);
            }
        }
        Ok(Verified {
            user,
            exp: claims.exp,
            attributes: claims.attributes.unwrap_or_default(),
        })
    }

    /// Epoch milliseconds after which a token with this `exp` is no longer honoured.
    pub fn deadline_ms(&self, exp: i64) -> i64 {
        (exp + self.leeway_secs) * 1000 + 999
    }
}

/// Mints an HS256 token (for `beckon token`, tests and the demo).
pub fn mint_hs256(
    secret: &str,
    user: &str,
    attributes: Map<String, Value>,
    now_secs: i64,
    ttl_secs: Option<i64>,
) -> String {
    let claims = Claims {
        sub: Some(user.to_string()),
        iat: Some(now_secs),
        exp: ttl_secs.map(|t| now_secs + t),
        attributes: if attributes.is_empty() {
            None
        } else {
            Some(attributes)
        },
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encoding of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(clock: Clock) -> Authenticator {
        let cfg = JwtConfig {
            secret: Some("s3cret".into()),
            ..JwtConfig::default()
        };
        Authenticator::new(&cfg, 5, clock).unwrap()
    }

    #[test]
    fn verifies_and_reads_attributes() {
        let clock = Clock::system();
        let mut attrs = Map::new();
        attrs.insert("plan".into(), "pro".into());
        let t = mint_hs256("s3cret", "u_1", attrs, clock.now_secs(), Some(60));
        let v = auth(clock).verify(&t).unwrap();
        assert_eq!(v.user, "u_1");
        assert_eq!(v.attributes["plan"], "pro");
    }

    #[test]
    fn rejects_wrong_secret_alg_none_and_missing_sub() {
        let clock = Clock::system();
        let a = auth(clock.clone());
        let wrong = mint_hs256("other", "u_1", Map::new(), clock.now_secs(), Some(60));
        assert!(matches!(a.verify(&wrong), Err(AuthError::Invalid(_))));
        // alg: none, no signature.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(r#"{"sub":"u_1"}"#)
        );
        assert!(matches!(a.verify(&none), Err(AuthError::Invalid(_))));
        let claims = Claims {
            sub: None,
            exp: None,
            iat: None,
            attributes: None,
        };
        let nosub = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(matches!(a.verify(&nosub), Err(AuthError::Invalid(_))));
        assert!(matches!(a.verify("garbage"), Err(AuthError::Invalid(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_uses_the_injected_clock_with_leeway() {
        let clock = Clock::tokio_anchored(1_800_000_000_000);
        let a = auth(clock.clone());
        let t = mint_hs256("s3cret", "u_1", Map::new(), clock.now_secs(), Some(10));
        assert!(a.verify(&t).is_ok());
        tokio::time::advance(std::time::Duration::from_secs(14)).await;
        assert!(a.verify(&t).is_ok(), "inside the 5 s leeway");
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        assert_eq!(a.verify(&t).unwrap_err(), AuthError::Expired);
    }
}
