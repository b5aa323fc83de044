//! Identity: password hashing and the tokens that prove who a request or a socket acts for.
//!
//! - [`password`]: argon2id hashes (run them off the async threads).
//! - [`tokens`]: short-lived JWT access tokens (HS256, issuer/audience checked, `now` injected)
//!   and opaque refresh tokens stored only as hashes.

pub mod password;
pub mod tokens;
