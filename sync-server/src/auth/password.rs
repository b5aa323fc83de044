//! Password hashing: argon2id with the crate's recommended parameters, in PHC string form (the
//! parameters and salt travel with the hash, so they can be raised later without a migration).
//! Both functions are CPU-heavy by design: call them off the async threads.
//!
//! Each thread keeps argon2's working memory (19 MiB with these parameters) for its next hash.
//! Allocated and freed per hash, it was kept by glibc in every thread's arena for good (its
//! adaptive threshold moves such blocks off `mmap`): a burst of sign-ups left hundreds of MiB
//! resident.

use std::cell::RefCell;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Shortest and longest passwords accepted (the upper bound keeps hashing cost bounded).
pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;

thread_local! {
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// `argon`'s output for `password` and `salt`, computed in this thread's kept memory.
fn compute(
    argon: &Argon2,
    params: &Params,
    password: &[u8],
    salt: Salt,
) -> password_hash::Result<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    MEMORY.with_borrow_mut(|memory| {
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        Output::init_with(len, |out| {
            Ok(argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])?)
        })
    })
}

pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = compute(&argon, &params, password.as_bytes(), salt.as_salt())
        .expect("argon2id with default parameters accepts any password and salt");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect("the default parameters encode"),
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// Whether `password` matches a stored PHC hash (its own algorithm, version and parameters).
/// A malformed stored hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    // `Output`'s equality takes constant time.
    compute(&argon, &params, password.as_bytes(), salt).is_ok_and(|output| output == expected)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn a_hash_verifies_only_its_password() {
        let stored = hash("correct horse battery staple");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse battery staple", &stored));
        assert!(!verify("correct horse battery stapler", &stored));
        assert!(!verify("correct horse battery staple", "not a hash"));
        assert_ne!(stored, hash("correct horse battery staple"), "salted");
    }

    #[test]
    fn hashes_are_those_of_the_argon2_crate_both_ways() {
        let stored = hash("correct horse battery staple");
        let parsed = PasswordHash::new(&stored).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery staple", &parsed)
                .is_ok()
        );
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"another password", &salt)
            .unwrap()
            .to_string();
        assert!(verify("another password", &theirs));
        assert!(!verify("another passwore", &theirs));
        // Other parameters (as a later change might choose) are read from the hash.
        let cheaper = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 3, 1, None).unwrap(),
        )
        .hash_password(b"another password", &salt)
        .unwrap()
        .to_string();
        assert!(verify("another password", &cheaper));
    }
}
