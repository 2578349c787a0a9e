//! Recipients (public keys) from a `.age-recipients` file. The accepted syntax is exactly that of
//! `age -R` (whole-line `#` comments, empty lines, no surrounding whitespace), so a file that works
//! here works with the plain `age` CLI too.

use age::x25519;

use super::SecretError;

/// Longest excerpt of a bad recipient line quoted in an error.
const QUOTE_LIMIT: usize = 80;

/// The public keys a secret is encrypted to, and the file they came from.
#[derive(Clone, Debug)]
pub struct Recipients {
    keys: Vec<x25519::Recipient>,
    origin: String,
}

impl Recipients {
    /// Distinct recipients (a key listed twice counts once).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The file (or other source) the recipients were read from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.keys.iter().map(|key| key as &dyn age::Recipient)
    }
}

/// Parses recipients-file text; `origin` (the file path) names the source in errors.
pub fn parse_recipients(text: &str, origin: &str) -> Result<Recipients, SecretError> {
    let mut keys: Vec<x25519::Recipient> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = parse_line(line).map_err(|detail| SecretError::BadRecipient {
            origin: origin.to_owned(),
            line: index + 1,
            detail,
        })?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(SecretError::NoRecipients {
            origin: origin.to_owned(),
        });
    }
    Ok(Recipients {
        keys,
        origin: origin.to_owned(),
    })
}

/// One non-comment line, or the error detail that follows "not an age recipient".
fn parse_line(line: &str) -> Result<x25519::Recipient, String> {
    if let Ok(key) = line.parse() {
        return Ok(key);
    }
    // Quote only what is recognisably public; anything else might be pasted key material.
    let detail = if line.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        ": this is a PRIVATE key, which must never be committed; remove it (and rotate it if it \
         was pushed) and put its public key (age1...) here instead"
            .to_owned()
    } else if line.trim() != line {
        ": leading or trailing whitespace, which `age -R` rejects".to_owned()
    } else if line.starts_with("ssh-") || line.starts_with("ecdsa-") {
        format!(
            ": {} is an SSH key, which is not supported; use an age1... key from \
             `reconciler secret keygen`",
            quote(line)
        )
    } else if line.starts_with("age1") {
        format!(
            ": {} (a mistyped or truncated age1... key, or a plugin recipient, which is not \
             supported)",
            quote(line)
        )
    } else {
        ": expected an age1... public key, a # comment or an empty line".to_owned()
    };
    Err(detail)
}

fn quote(line: &str) -> String {
    let excerpt: String = line.chars().take(QUOTE_LIMIT).collect();
    if excerpt.len() < line.len() {
        format!("{:?}...", excerpt)
    } else {
        format!("{:?}", excerpt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::generate_identity;

    fn recipient() -> String {
        generate_identity().1
    }

    #[test]
    fn reads_keys_between_comments_and_blank_lines() {
        let (a, b) = (recipient(), recipient());
        let text = format!("# ops team\n{a}\n\n# cluster\r\n{b}\r\n{a}\n");
        let recipients = parse_recipients(&text, "/repo/.age-recipients").unwrap();
        assert_eq!(recipients.len(), 2, "duplicates count once");
        assert_eq!(recipients.origin(), "/repo/.age-recipients");
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let good = recipient();
        // A different last character breaks the checksum (whatever the random key ends in).
        let last = if good.ends_with('x') { 'y' } else { 'x' };
        let bad = format!("{}{last}", &good[..good.len() - 1]);
        let text = format!("# keys\n{good}\n{bad}\n");
        let msg = parse_recipients(&text, "/repo/.age-recipients")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(&format!(
                "/repo/.age-recipients:3: not an age recipient: \"{bad}\""
            )),
            "{msg}"
        );
    }

    #[test]
    fn private_key_in_recipients_is_flagged_but_never_echoed() {
        let (identity, public) = generate_identity();
        let secret_line = identity.lines().last().unwrap();
        let text = format!("{public}\n{secret_line}\n");
        let err = parse_recipients(&text, ".age-recipients").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(".age-recipients:2:"), "{msg}");
        assert!(msg.contains("PRIVATE key"), "{msg}");
        assert!(!msg.contains(secret_line));
        assert!(!format!("{err:?}").contains(secret_line));
    }

    #[test]
    fn unrecognised_lines_are_not_quoted() {
        let msg = parse_recipients("b3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n", "r")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("r:1: not an age recipient: expected"),
            "{msg}"
        );
        assert!(!msg.contains("b3BlbnNz"), "{msg}");
    }

    #[test]
    fn surrounding_whitespace_is_rejected_like_age_does() {
        let msg = parse_recipients(&format!("  {}\n", recipient()), "r")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("r:1:") && msg.contains("whitespace"), "{msg}");
    }

    #[test]
    fn file_without_recipients_is_an_error() {
        let msg = parse_recipients("# nobody yet\n", "/repo/.age-recipients")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/repo/.age-recipients: contains no recipients"),
            "{msg}"
        );
        assert!(msg.contains("reconciler secret keygen"), "{msg}");
    }
}
