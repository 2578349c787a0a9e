//! Age identities (private keys): read from a file or a variable, found from the configuration,
//! and generated. Only native X25519 identities (`AGE-SECRET-KEY-1...`) are supported: they are
//! what `age-keygen` and `reconciler secret keygen` produce, and they need no plugin or TTY.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use age::secrecy::ExposeSecret;
use age::x25519;
use zeroize::Zeroizing;

use super::{SecretError, IDENTITY_ENV, IDENTITY_FILE_ENV};

/// One or more age identities and where they came from (for error messages).
#[derive(Clone)]
pub struct Identities {
    keys: Vec<x25519::Identity>,
    origin: String,
}

impl Identities {
    /// Reads an age identity file: `AGE-SECRET-KEY-1...` lines, `#` comments, blank lines.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let origin = path.display().to_string();
        let bytes = fs::read(path).map_err(|source| SecretError::ReadIdentityFile {
            path: origin.clone(),
            source,
        })?;
        let bytes = Zeroizing::new(bytes);
        warn_if_readable_by_others(path);
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::IdentityNotText {
            origin: origin.clone(),
        })?;
        Self::from_text(text, &origin)
    }

    /// Parses identity file text; `origin` names its source in errors (a path, `$VAR`).
    pub fn from_text(text: &str, origin: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            // Trimmed because keys pasted into CI variables often carry stray whitespace.
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line
                .parse::<x25519::Identity>()
                .map_err(|_| SecretError::BadIdentity {
                    origin: origin.to_owned(),
                    line: index + 1,
                    hint: identity_hint(line),
                })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(SecretError::NoIdentityInFile {
                origin: origin.to_owned(),
            });
        }
        Ok(Self {
            keys,
            origin: origin.to_owned(),
        })
    }

    /// The configured identities: `explicit` (from `--identity`) wins, then the file named by
    /// `RECONCILER_AGE_IDENTITY_FILE`, then the key text in `RECONCILER_AGE_IDENTITY`.
    /// `None` when nothing is configured; empty variables count as unset.
    pub fn discover(explicit: Option<&Path>) -> Result<Option<Self>, SecretError> {
        discover_from(
            explicit,
            std::env::var_os(IDENTITY_FILE_ENV),
            std::env::var_os(IDENTITY_ENV),
        )
    }

    /// Where the identities came from: a file path or `$RECONCILER_AGE_IDENTITY`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Do these identities and `other` hold the same keys? (Compared by their public keys.)
    pub fn same_keys(&self, other: &Identities) -> bool {
        let public = |ids: &Identities| {
            let mut keys: Vec<String> =
                ids.keys.iter().map(|k| k.to_public().to_string()).collect();
            keys.sort();
            keys
        };
        public(self) == public(other)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|key| key as &dyn age::Identity)
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("origin", &self.origin)
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// `discover` with the environment passed in, so tests need not mutate the process environment.
fn discover_from(
    explicit: Option<&Path>,
    file_var: Option<OsString>,
    text_var: Option<OsString>,
) -> Result<Option<Identities>, SecretError> {
    if let Some(path) = explicit {
        return Identities::from_file(path).map(Some);
    }
    if let Some(path) = file_var.filter(|v| !v.is_empty()) {
        return Identities::from_file(Path::new(&path)).map(Some);
    }
    if let Some(text) = text_var.filter(|v| !v.is_empty()) {
        let origin = format!("${IDENTITY_ENV}");
        let text =
            text.into_string()
                .map(Zeroizing::new)
                .map_err(|_| SecretError::IdentityNotText {
                    origin: origin.clone(),
                })?;
        return Identities::from_text(&text, &origin).map(Some);
    }
    Ok(None)
}

/// What a non-identity line most likely is, judged by its prefix only (the line is never echoed).
fn identity_hint(line: &str) -> &'static str {
    if line.starts_with("age1") {
        " (this is a public key: it belongs in .age-recipients; the identity is the matching \
         AGE-SECRET-KEY-1... line)"
    } else if line.starts_with("AGE-SECRET-KEY-") {
        " (malformed AGE-SECRET-KEY-1... line: truncated or mistyped?)"
    } else if line.starts_with("AGE-PLUGIN-") {
        " (age plugin identities are not supported; use an AGE-SECRET-KEY-1... key)"
    } else if line.starts_with("age-encryption.org/") || line.starts_with("-----BEGIN AGE") {
        " (passphrase-protected identity files are not supported; decrypt it with `age -d` first)"
    } else if line.contains("PRIVATE KEY") {
        " (SSH keys are not supported; create an age key with `reconciler secret keygen`)"
    } else {
        " (expected a line starting with AGE-SECRET-KEY-1, a # comment, or a blank line)"
    }
}

/// Nags like ssh does, but only warns: refusing would break checkouts that lose file modes.
#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::info!(
                path = %path.display(),
                "age identity file is readable by other users; `chmod 600` it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// A new X25519 identity: the identity file text (with `# created:` and `# public key:` comments,
/// like `age-keygen`) and its recipient (`age1...`).
pub fn generate_identity() -> (String, String) {
    let identity = x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = humantime::format_rfc3339_seconds(SystemTime::now());
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );
    (text, recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(text: &str) -> &str {
        text.lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .unwrap()
    }

    #[test]
    fn generated_identity_parses_and_names_its_recipient() {
        let (text, recipient) = generate_identity();
        assert!(recipient.starts_with("age1"), "{recipient}");
        assert!(text.contains(&format!("# public key: {recipient}\n")));
        let ids = Identities::from_text(&text, "gen").unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.keys[0].to_public().to_string(), recipient);
    }

    #[test]
    fn reads_several_keys_skipping_comments_blanks_and_crlf() {
        let (a, _) = generate_identity();
        let (b, _) = generate_identity();
        let text = format!(
            "# mine\r\n\r\n  {}  \r\n# theirs\n{}\n",
            key_line(&a),
            key_line(&b)
        );
        let ids = Identities::from_text(&text, "keys.txt").unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.origin(), "keys.txt");
    }

    #[test]
    fn malformed_line_names_origin_and_line_but_not_content() {
        let (good, _) = generate_identity();
        let broken = &key_line(&good)[..40];
        let text = format!("# comment\n{broken}\n");
        let err = Identities::from_text(&text, "/keys/k.txt").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/keys/k.txt:2: not an age identity"),
            "{msg}"
        );
        assert!(msg.contains("truncated"), "{msg}");
        assert!(!msg.contains(broken), "{msg}");
        assert!(!format!("{err:?}").contains(broken));
    }

    #[test]
    fn public_key_in_identity_file_gets_a_hint() {
        let (_, recipient) = generate_identity();
        let msg = Identities::from_text(&recipient, "k.txt")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("k.txt:1:"), "{msg}");
        assert!(msg.contains(".age-recipients"), "{msg}");
    }

    #[test]
    fn file_without_keys_is_an_error() {
        let msg = Identities::from_text("# nothing here\n\n", "empty.txt")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("empty.txt: contains no age identity"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let msg = Identities::from_file(Path::new("/nonexistent/key.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/nonexistent/key.txt: cannot read"),
            "{msg}"
        );
    }

    #[test]
    fn debug_shows_origin_and_count_only() {
        let (text, _) = generate_identity();
        let ids = Identities::from_text(&text, "k.txt").unwrap();
        let debug = format!("{ids:?}");
        assert!(
            debug.contains("k.txt") && debug.contains("count: 1"),
            "{debug}"
        );
        assert!(!debug.contains("AGE-SECRET-KEY"), "{debug}");
    }

    #[test]
    fn discover_order_is_explicit_then_file_var_then_text_var() {
        let dir = tempfile::tempdir().unwrap();
        let (explicit_text, explicit_pub) = generate_identity();
        let (file_text, file_pub) = generate_identity();
        let (env_text, env_pub) = generate_identity();
        let explicit = dir.path().join("explicit.txt");
        let from_var = dir.path().join("var.txt");
        fs::write(&explicit, &explicit_text).unwrap();
        fs::write(&from_var, &file_text).unwrap();
        let public = |ids: Option<Identities>| ids.unwrap().keys[0].to_public().to_string();

        let file_var = || Some(from_var.clone().into_os_string());
        let text_var = || Some(OsString::from(&env_text));
        let found = discover_from(Some(&explicit), file_var(), text_var()).unwrap();
        assert_eq!(public(found), explicit_pub);
        let found = discover_from(None, file_var(), text_var()).unwrap();
        assert_eq!(public(found), file_pub);
        let found = discover_from(None, Some(OsString::new()), text_var()).unwrap();
        assert_eq!(found.as_ref().unwrap().origin(), "$RECONCILER_AGE_IDENTITY");
        assert_eq!(public(found), env_pub);
    }

    #[test]
    fn discover_without_configuration_is_none() {
        assert!(discover_from(None, None, None).unwrap().is_none());
        let empty = || Some(OsString::new());
        assert!(discover_from(None, empty(), empty()).unwrap().is_none());
    }
}
