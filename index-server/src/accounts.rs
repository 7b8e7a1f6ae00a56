//! Passwords, tokens and durations for accounts: the parts of signing in that are not storage.
//!
//! Passwords are Argon2id PHC strings (parameters from the config, OWASP's by default); tokens
//! and invite codes are 32 random bytes shown once and stored as their BLAKE3 hash (high entropy
//! needs no slow hash).

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

use crate::config::AccountsConfig;
use crate::limits::random_hex;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (hashing cost must not depend on an attacker's input).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short.
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// Too long.
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The hasher failed (bad parameters).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

fn hasher(config: &AccountsConfig) -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, 1, None)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string (blocking: tens of milliseconds at OWASP parameters).
pub fn hash_password(config: &AccountsConfig, password: &str) -> Result<String, PasswordError> {
    check_password(password)?;
    hasher(config)?
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches the stored PHC string (with the parameters stored in it).
pub fn verify_password(phc: &str, password: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
        && Argon2::default()
            .verify_password(password.as_bytes(), phc)
            .is_ok()
}

/// A PHC string that no password matches, verified against when the account does not exist,
/// so that a wrong name costs as long as a wrong password.
pub fn decoy_hash(config: &AccountsConfig) -> String {
    hash_password(config, "no account has this password").unwrap_or_default()
}

/// A new secret (token, API key or invite code) with its prefix, and the hash stored for it.
pub fn new_secret(prefix: &str) -> Option<(String, [u8; 32])> {
    let secret = format!("{prefix}{}", random_hex::<32>()?);
    let hash = secret_hash(&secret);
    Some((secret, hash))
}

/// The stored hash of a secret.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.trim().as_bytes()).as_bytes()
}

/// Reads a duration such as `30m`, `12h`, `7d`, `2w` or `90s` into seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    number.checked_mul(unit).filter(|&s| s > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> AccountsConfig {
        AccountsConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..AccountsConfig::default()
        }
    }

    #[test]
    fn passwords_are_argon2id_phc_strings_and_verify() {
        let phc = hash_password(&cheap(), "correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "correct horsE"));
        assert!(!verify_password("not a phc string", "correct horse"));
        assert!(!phc.contains("correct"));
    }

    #[test]
    fn the_default_parameters_are_owasps() {
        let phc = hash_password(&AccountsConfig::default(), "correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert_eq!(
            hash_password(&cheap(), "short"),
            Err(PasswordError::TooShort)
        );
        assert_eq!(
            hash_password(&cheap(), &"x".repeat(2000)),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn durations_read_like_uhubs() {
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("12h"), Some(43_200));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("0d"), None);
        assert_eq!(parse_duration("7"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("7y"), None);
    }

    #[test]
    fn secrets_are_prefixed_random_and_stored_hashed() {
        let (a, hash) = new_secret("pdx_").unwrap();
        let (b, _) = new_secret("pdx_").unwrap();
        assert!(a.starts_with("pdx_") && a.len() == 68);
        assert_ne!(a, b);
        assert_eq!(secret_hash(&a), hash);
    }
}
