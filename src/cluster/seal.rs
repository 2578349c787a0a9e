//! Encryption at rest, after swarmkit's: every manager seals its Raft log entries and its
//! snapshots with a data key of its own (ChaCha20-Poly1305, a fresh random nonce per value),
//! so the root CA key, the join tokens and everything else the store holds are never on disk
//! in the clear. The data key and the node's TLS key sit in the data dir beside them, in
//! the clear by default; with autolock both are sealed by the cluster's unlock key, which no
//! disk holds in the clear: a manager that starts again stays locked until it is given it.

use std::fmt;
use std::str::FromStr;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};
use zeroize::Zeroizing;

use super::token::{base36, unbase36};

/// The first byte of everything sealed: the format, so that a later one can be told apart.
const FORMAT: u8 = 1;

/// Why sealed bytes did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the data is not sealed in a format this version knows")]
    Format,
    #[error("the key does not open the data (another key sealed it, or it was changed)")]
    WrongKey,
}

/// A 256-bit key that seals and opens bytes. `Debug` never shows it.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<DataKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut key[..])
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        Ok(DataKey(key))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.0[..]).expect("a 256-bit key fits"),
        )
    }

    /// `plain`, sealed: format byte, nonce, ciphertext and tag. `purpose` is bound into the
    /// tag, so a value sealed for one place does not open as another's.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        // Sealed in place in the one buffer it is returned in: snapshots are megabytes.
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .aead()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut out[1 + NONCE_LEN..],
            )
            .expect("ChaCha20-Poly1305 seals any length this process holds");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The bytes `seal` was given, if this key sealed them for `purpose` and nothing changed.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (&format, rest) = sealed.split_first().ok_or(SealError::Format)?;
        if format != FORMAT || rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Format);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Format)?;
        let mut body = body.to_vec();
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut body)
            .map_err(|_| SealError::WrongKey)?;
        Ok(plain.to_vec())
    }
}

/// The cluster's unlock key, in Swarm's shape: `SWMKEY-1-<256 bits in base 36>`. It seals
/// the managers' own keys when the cluster is autolocked. `Display` is the key itself (for
/// `unlock-key`); `Debug` never shows it.
#[derive(Clone)]
pub struct UnlockKey(DataKey);

const PREFIX: &str = "SWMKEY-1-";
const KEY_CHARS: usize = 50;

impl UnlockKey {
    pub fn generate() -> anyhow::Result<UnlockKey> {
        DataKey::generate().map(UnlockKey)
    }

    pub fn key(&self) -> &DataKey {
        &self.0
    }
}

impl fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}",
            Zeroizing::new(base36(self.0.as_bytes(), KEY_CHARS)).as_str()
        )
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(SWMKEY-1-<secret>)")
    }
}

impl PartialEq for UnlockKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes()[..].ct_eq(&other.0.as_bytes()[..]).into()
    }
}

/// Why a string is not an unlock key (never quoting it: it may be a real one mistyped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an unlock key is SWMKEY-1- followed by {KEY_CHARS} letters and digits")]
pub struct NotAnUnlockKey;

impl FromStr for UnlockKey {
    type Err = NotAnUnlockKey;

    fn from_str(s: &str) -> Result<UnlockKey, NotAnUnlockKey> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(NotAnUnlockKey)?;
        if body.len() != KEY_CHARS {
            return Err(NotAnUnlockKey);
        }
        let bytes = Zeroizing::new(unbase36::<32>(body).ok_or(NotAnUnlockKey)?);
        Ok(UnlockKey(DataKey::from_bytes(*bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_with_their_key_and_purpose_only() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal("raft-log", b"the root key");
        assert!(!sealed.windows(12).any(|w| w == b"the root key"));
        assert_eq!(key.open("raft-log", &sealed).unwrap(), b"the root key");
        // The same value sealed twice differs (a fresh nonce each time).
        assert_ne!(sealed, key.seal("raft-log", b"the root key"));
        assert_eq!(key.open("snapshot", &sealed), Err(SealError::WrongKey));
        let other = DataKey::generate().unwrap();
        assert_eq!(other.open("raft-log", &sealed), Err(SealError::WrongKey));
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("raft-log", &changed), Err(SealError::WrongKey));
        assert_eq!(
            key.open("raft-log", b"{\"plain\":1}"),
            Err(SealError::Format)
        );
        assert_eq!(key.open("raft-log", &[]), Err(SealError::Format));
    }

    #[test]
    fn an_unlock_key_reads_back_as_itself_and_debug_hides_it() {
        let key = UnlockKey::generate().unwrap();
        let text = key.to_string();
        assert!(text.starts_with("SWMKEY-1-"), "{text}");
        assert_eq!(text.len(), 9 + KEY_CHARS);
        assert_eq!(text.parse::<UnlockKey>().unwrap(), key);
        assert_eq!(format!(" {text}\n").parse::<UnlockKey>().unwrap(), key);
        assert!(!format!("{key:?}").contains(&text[9..]));
        for bad in [
            "",
            "SWMKEY-1-",
            "SWMTKN-1-abc",
            &text[..text.len() - 1],
            &text.replace("SWMKEY-1-", "SWMKEY-2-"),
        ] {
            assert_eq!(bad.parse::<UnlockKey>(), Err(NotAnUnlockKey), "{bad}");
        }
    }
}
