//! Password hashing: argon2id with the crate's recommended parameters, in PHC string form (the
//! parameters and salt travel with the hash, so they can be raised later without a migration).
//! Both functions are CPU-heavy by design: call them off the async threads.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Shortest and longest passwords accepted (the upper bound keeps hashing cost bounded).
pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with default parameters accepts any password and salt")
        .to_string()
}

/// Whether `password` matches a hash made by [`hash`]. A malformed stored hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_password() {
        let stored = hash("correct horse battery staple");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify("correct horse battery staple", &stored));
        assert!(!verify("correct horse battery stapler", &stored));
        assert!(!verify("correct horse battery staple", "not a hash"));
        assert_ne!(stored, hash("correct horse battery staple"), "salted");
    }
}
