//! Everything that can go wrong with secrets. Each message names the secret or the file (and
//! line), says what would fix it, and never carries content: these strings end up in logs, in CI
//! output and on the status page.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret {secret:?}: no age identity configured: pass --identity FILE or set \
         RECONCILER_AGE_IDENTITY_FILE (or RECONCILER_AGE_IDENTITY to the key itself)"
    )]
    NoIdentity { secret: String },

    #[error(
        "secret {secret:?}: no identity can decrypt it (tried {tried} {} from {origin}); \
         is the right key in --identity or RECONCILER_AGE_IDENTITY_FILE?",
        identity_word(*.tried)
    )]
    NoMatchingIdentity {
        secret: String,
        tried: usize,
        origin: String,
    },

    #[error(
        "secret {secret:?}: encrypted with a passphrase, which cannot be decrypted unattended; \
         re-encrypt it to the stacks' .age-recipients with `reconciler secret encrypt`"
    )]
    Passphrase { secret: String },

    #[error("secret {secret:?}: not an age file: {reason}")]
    NotAgeFile { secret: String, reason: String },

    #[error("secret {secret:?}: cannot decrypt: {reason}; the file is damaged or truncated")]
    Damaged { secret: String, reason: String },

    #[error("{path}: cannot read age identity file: {source}")]
    ReadIdentityFile {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("{origin}: not valid UTF-8; an age identity file is text")]
    IdentityNotText { origin: String },

    // The offending line is deliberately not quoted: it may be (part of) a private key.
    #[error("{origin}:{line}: not an age identity{hint}")]
    BadIdentity {
        origin: String,
        line: usize,
        hint: &'static str,
    },

    #[error(
        "{origin}: contains no age identity (expected a line starting with AGE-SECRET-KEY-1; \
         create one with `reconciler secret keygen`)"
    )]
    NoIdentityInFile { origin: String },

    #[error("{origin}:{line}: not an age recipient{detail}")]
    BadRecipient {
        origin: String,
        line: usize,
        detail: String,
    },

    #[error(
        "{origin}: contains no recipients (add a line with an age1... public key, e.g. from \
         `reconciler secret keygen -o key.txt >> {origin}`)"
    )]
    NoRecipients { origin: String },

    #[error("encrypting to the recipients in {origin}: {reason}")]
    Encrypt { origin: String, reason: String },
}

fn identity_word(n: usize) -> &'static str {
    if n == 1 {
        "identity"
    } else {
        "identities"
    }
}
