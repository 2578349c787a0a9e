//! Secrets in the stacks repo are age-encrypted files (`*.age`), encrypted to the public keys
//! listed in `.age-recipients` at the repo root and decrypted with an age identity that only the
//! cluster (or a CI job) holds.
//!
//! Plaintext lives only in [`SecretBytes`], which is wiped on drop and never printed. Errors name
//! the secret or the file and line, never the content: neither plaintext nor key material ever
//! reaches an error message, a `Debug` string or a log line.

mod crypt;
mod error;
mod identity;
mod recipients;

use std::fmt;

use zeroize::Zeroizing;

pub use crypt::{decrypt, encrypt};
pub use error::SecretError;
pub use identity::{generate_identity, Identities};
pub use recipients::{parse_recipients, Recipients};

/// Public keys to encrypt to, at the root of the stacks directory, in the format of `age -R`
/// (one recipient per line, `#` comments, blank lines), so the plain `age` CLI can use it too.
pub const RECIPIENTS_FILE: &str = ".age-recipients";

/// Path to an age identity file (`AGE-SECRET-KEY-1...` lines).
pub const IDENTITY_FILE_ENV: &str = "RECONCILER_AGE_IDENTITY_FILE";

/// The identity text itself, for environments that hand secrets over as variables (CI).
pub const IDENTITY_ENV: &str = "RECONCILER_AGE_IDENTITY";

/// True for paths of age-encrypted files: a file name ending in `.age` (and more than that).
pub fn is_encrypted_path(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    name.len() > ".age".len() && name.ends_with(".age")
}

/// Decrypted secret content. Wiped from memory on drop; `Debug` shows only the length, and there
/// is deliberately no `Display` or `Serialize`, so it cannot end up in a log or a plan by accident.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The plaintext. Named so that every place that reads it stands out in review.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = SecretBytes::new(b"hunter2".to_vec());
        let debug = format!("{secret:?}");
        assert_eq!(debug, "SecretBytes(<redacted, 7 bytes>)");
        let nested = format!("{:?}", Some(&secret));
        assert!(!nested.contains("hunter2"), "{nested}");
    }

    #[test]
    fn secret_bytes_accessors() {
        let secret = SecretBytes::new(b"abc".to_vec());
        assert_eq!(secret.expose(), b"abc");
        assert_eq!(secret.len(), 3);
        assert!(!secret.is_empty());
        assert!(SecretBytes::new(Vec::new()).is_empty());
    }

    #[test]
    fn encrypted_paths_end_in_dot_age() {
        assert!(is_encrypted_path("web/secrets/api_key.age"));
        assert!(is_encrypted_path("api_key.age"));
        assert!(!is_encrypted_path("web/secrets/api_key"));
        assert!(!is_encrypted_path(".age-recipients"));
        assert!(!is_encrypted_path("web/.age"));
        assert!(!is_encrypted_path("api_key.age.txt"));
    }
}
