//! Join tokens, in Swarm's format: `SWMTKN-1-<CA digest>-<secret>`. The digest (SHA-256 of the
//! root certificate, base 36) lets a joining node check the CA it is sent before trusting
//! it, so a server in the middle cannot pose as the cluster; the secret (128 random bits,
//! base 36) is what the CA asks for before it signs, compared in constant time. A worker and
//! a manager token share the digest and differ in the secret, which also says the role.

use std::fmt;
use std::str::FromStr;

use ring::rand::SecureRandom as _;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
/// Base-36 digits of a 256-bit digest and of a 128-bit secret.
const DIGEST_CHARS: usize = 50;
const SECRET_CHARS: usize = 25;

/// A join token. Its `Debug` never shows the secret; `Display` is the token itself.
#[derive(Clone)]
pub struct JoinToken {
    ca_digest: [u8; 32],
    secret: Zeroizing<[u8; 16]>,
}

/// Why a string is not a join token (never quoting it: it may be a real one mistyped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a join token starts with SWMTKN-1-")]
    Prefix,
    #[error("a join token has four parts separated by '-': SWMTKN-1-<CA digest>-<secret>")]
    Parts,
    #[error("the token's CA digest is not {DIGEST_CHARS} base-36 characters")]
    Digest,
    #[error("the token's secret is not {SECRET_CHARS} base-36 characters")]
    Secret,
}

impl JoinToken {
    /// A new token for the CA whose digest is `ca_digest`.
    pub fn generate(ca_digest: [u8; 32]) -> anyhow::Result<JoinToken> {
        let mut secret = Zeroizing::new([0u8; 16]);
        ring::rand::SystemRandom::new()
            .fill(&mut secret[..])
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        Ok(JoinToken { ca_digest, secret })
    }

    /// Does the CA certificate (DER) a node was sent match the one the token names?
    pub fn trusts(&self, ca_cert_der: &[u8]) -> bool {
        super::ca::digest(ca_cert_der) == self.ca_digest
    }

    /// Is `other` this token? Constant time in the secret, so timing tells nothing of it.
    pub fn matches(&self, other: &JoinToken) -> bool {
        let same_secret: bool = self.secret[..].ct_eq(&other.secret[..]).into();
        same_secret && self.ca_digest == other.ca_digest
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}",
            base36(&self.ca_digest, DIGEST_CHARS),
            Zeroizing::new(base36(&self.secret[..], SECRET_CHARS)).as_str()
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JoinToken({PREFIX}-{VERSION}-{}-<secret>)",
            base36(&self.ca_digest, DIGEST_CHARS)
        )
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        let s = s.trim();
        if !s.starts_with(&format!("{PREFIX}-{VERSION}-")) {
            return Err(TokenError::Prefix);
        }
        let parts: Vec<&str> = s.split('-').collect();
        let [_, _, digest, secret] = parts[..] else {
            return Err(TokenError::Parts);
        };
        let ca_digest = (digest.len() == DIGEST_CHARS)
            .then(|| unbase36::<32>(digest))
            .flatten()
            .ok_or(TokenError::Digest)?;
        let secret = (secret.len() == SECRET_CHARS)
            .then(|| unbase36::<16>(secret))
            .flatten()
            .ok_or(TokenError::Secret)?;
        Ok(JoinToken {
            ca_digest,
            secret: Zeroizing::new(secret),
        })
    }
}

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `bytes` (big-endian) in base 36, left-padded with zeros to `width` characters.
pub(crate) fn base36(bytes: &[u8], width: usize) -> String {
    let mut n = bytes.to_vec();
    let mut out = Vec::with_capacity(width);
    while n.iter().any(|&b| b != 0) {
        // Long division of n by 36; the remainder is the next digit, least significant first.
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        out.push(DIGITS[rem as usize]);
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// The inverse of [`base36`]; None for a character that is not a digit or a value that does
/// not fit in N bytes.
pub(crate) fn unbase36<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut n = [0u8; N];
    for c in s.bytes() {
        let d = DIGITS.iter().position(|&x| x == c.to_ascii_lowercase())? as u32;
        // n = n * 36 + d, from the least significant byte up.
        let mut carry = d;
        for b in n.iter_mut().rev() {
            let cur = u32::from(*b) * 36 + carry;
            *b = (cur & 0xff) as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_itself_in_swarms_shape() {
        let t = JoinToken::generate([7; 32]).unwrap();
        let text = t.to_string();
        assert!(text.starts_with("SWMTKN-1-"), "{text}");
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 4, "{text}");
        assert_eq!(parts[2].len(), 50);
        assert_eq!(parts[3].len(), 25);
        let back: JoinToken = text.parse().unwrap();
        assert!(back.matches(&t));
        assert_eq!(back.to_string(), text);
        // Pasted with a newline, or upper-cased by a form: the same token.
        let shouted: JoinToken = format!(" {}\n", text.to_uppercase()).parse().unwrap();
        assert!(shouted.matches(&t));
    }

    #[test]
    fn two_tokens_differ_in_their_secret_and_the_secret_is_never_shown_by_debug() {
        let a = JoinToken::generate([1; 32]).unwrap();
        let b = JoinToken::generate([1; 32]).unwrap();
        assert!(!a.matches(&b), "128 random bits apart");
        let secret = a.to_string().rsplit('-').next().unwrap().to_string();
        let debug = format!("{a:?}");
        assert!(!debug.contains(&secret), "{debug}");
        assert!(debug.contains("<secret>"), "{debug}");
    }

    #[test]
    fn base36_round_trips_at_the_edges() {
        for bytes in [[0u8; 16], [0xff; 16], {
            let mut b = [0u8; 16];
            b[15] = 35;
            b
        }] {
            let s = base36(&bytes, SECRET_CHARS);
            assert_eq!(s.len(), SECRET_CHARS, "{s}");
            assert_eq!(unbase36::<16>(&s), Some(bytes), "{s}");
        }
        assert_eq!(base36(&[0, 35], 3), "00z");
        assert_eq!(base36(&[0, 36], 3), "010");
        // 36^25 > 2^128: the largest 25-digit value does not fit in 16 bytes.
        assert_eq!(unbase36::<16>(&"z".repeat(25)), None);
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong_without_quoting_them() {
        let good = JoinToken::generate([9; 32]).unwrap().to_string();
        let parts: Vec<&str> = good.split('-').collect();
        let cases = [
            ("", TokenError::Prefix),
            ("SWMTKN-2-abc-def", TokenError::Prefix),
            ("swarm-token", TokenError::Prefix),
            (&format!("SWMTKN-1-{}", parts[2]) as &str, TokenError::Parts),
            (&format!("{good}-extra"), TokenError::Parts),
            (
                &format!("SWMTKN-1-{}-{}", &parts[2][1..], parts[3]),
                TokenError::Digest,
            ),
            (
                &format!("SWMTKN-1-{}!-{}", &parts[2][1..], parts[3]),
                TokenError::Digest,
            ),
            (
                &format!("SWMTKN-1-{}-{}0", parts[2], parts[3]),
                TokenError::Secret,
            ),
            (
                &format!("SWMTKN-1-{}-{}", parts[2], "z".repeat(25)),
                TokenError::Secret,
            ),
        ];
        for (text, want) in cases {
            let got = text.parse::<JoinToken>().unwrap_err();
            assert_eq!(got, want, "{text}");
            assert!(!got.to_string().contains(parts[3]), "{got}");
        }
    }
}
