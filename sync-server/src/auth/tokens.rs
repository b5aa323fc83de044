//! Access tokens (short-lived JWTs, HS256) and refresh tokens (opaque random strings, stored
//! only as their SHA-256). Sans-IO: the time is an argument, so expiry is tested exactly.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who issues the tokens and who they are for.
pub const ISSUER: &str = "taskflow";
pub const AUDIENCE: &str = "taskflow-api";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session (refresh-token family) the token belongs to: revoking it ends the token.
    pub sid: String,
    /// The token's own id.
    pub jti: String,
    /// Seconds since the epoch.
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or its signature is wrong")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// Signs and checks access tokens with one server secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(…)")
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Checks signature, algorithm (HS256 only: `alg: none` and others are refused), issuer,
    /// audience and expiry against `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        // Expiry is checked below against the given clock, not the library's.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// A fresh refresh token: 256 random bits, URL-safe.
pub fn new_refresh_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What the database keeps of a refresh token.
pub fn refresh_token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "user-1".into(),
            sid: "session-1".into(),
            jti: "token-1".into(),
            iat: NOW,
            exp,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let keys = TokenKeys::new(b"a secret of enough length for tests");
        let token = keys.sign(&claims(NOW + 900));
        assert_eq!(keys.verify(&token, NOW).expect("valid"), claims(NOW + 900));
        assert_eq!(
            keys.verify(&token, NOW + 899).map(|c| c.sub),
            Ok("user-1".into())
        );
        assert_eq!(keys.verify(&token, NOW + 900), Err(TokenError::Expired));
    }

    #[test]
    fn forged_tampered_and_foreign_tokens_are_refused() {
        let keys = TokenKeys::new(b"a secret of enough length for tests");
        let other = TokenKeys::new(b"another secret entirely, same length");
        let token = keys.sign(&claims(NOW + 900));
        assert_eq!(
            other.verify(&token, NOW),
            Err(TokenError::Invalid),
            "other key"
        );

        // Flip one character of the payload.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload = parts[1].clone().into_bytes();
        payload[5] = if payload[5] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(payload).expect("ascii");
        assert_eq!(
            keys.verify(&parts.join("."), NOW),
            Err(TokenError::Invalid),
            "tampered"
        );

        // `alg: none` with the same claims and no signature.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(NOW + 900)).expect("json"));
        assert_eq!(
            keys.verify(&format!("{header}.{body}."), NOW),
            Err(TokenError::Invalid)
        );

        // Right key, wrong audience.
        let mut foreign = claims(NOW + 900);
        foreign.aud = "some-other-service".into();
        assert_eq!(
            keys.verify(&keys.sign(&foreign), NOW),
            Err(TokenError::Invalid)
        );
        assert_eq!(keys.verify("not a token", NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let (a, b) = (new_refresh_token(), new_refresh_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(refresh_token_hash(&a), refresh_token_hash(&a));
        assert_eq!(refresh_token_hash(&a).len(), 64);
        assert_ne!(refresh_token_hash(&a), a);
    }
}
