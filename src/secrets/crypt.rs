//! Encrypting to recipients and decrypting with identities.

use std::io::{ErrorKind, Read, Write};

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::{DecryptError, Decryptor, Encryptor};
use zeroize::Zeroizing;

use super::{Identities, Recipients, SecretBytes, SecretError};

const BINARY_MAGIC: &[u8] = b"age-encryption.org/";
const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// Decrypts one secret file, ASCII-armored or binary. `secret_name` only labels errors.
pub fn decrypt(
    secret_name: &str,
    ciphertext: &[u8],
    identities: &Identities,
) -> Result<SecretBytes, SecretError> {
    check_is_age(ciphertext).map_err(|reason| SecretError::NotAgeFile {
        secret: secret_name.to_owned(),
        reason: reason.to_owned(),
    })?;
    // ArmoredReader passes binary input through untouched, so one path serves both encodings.
    let decryptor = Decryptor::new(ArmoredReader::new(ciphertext))
        .map_err(|e| damaged(secret_name, header_problem(e)))?;
    if decryptor.is_scrypt() {
        return Err(SecretError::Passphrase {
            secret: secret_name.to_owned(),
        });
    }
    let mut reader = decryptor.decrypt(identities.iter()).map_err(|e| match e {
        DecryptError::NoMatchingKeys => SecretError::NoMatchingIdentity {
            secret: secret_name.to_owned(),
            tried: identities.len(),
            origin: identities.origin().to_owned(),
        },
        other => damaged(secret_name, other.to_string()),
    })?;
    // Plaintext is never longer than the ciphertext: reserving that much up front means the
    // buffer is never reallocated, so no unwiped copy of a partial plaintext is left behind.
    let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    reader
        .read_to_end(&mut plaintext)
        .map_err(|e| damaged(secret_name, e.to_string()))?;
    Ok(SecretBytes(plaintext))
}

/// Tells "not age at all" (often plaintext committed by mistake) from a damaged age file, which
/// age's own errors ("failed to fill whole buffer") do not.
fn check_is_age(ciphertext: &[u8]) -> Result<(), &'static str> {
    if ciphertext.is_empty() {
        return Err("the file is empty");
    }
    let start = ciphertext.trim_ascii_start();
    if start.starts_with(BINARY_MAGIC) || start.starts_with(ARMOR_BEGIN) {
        Ok(())
    } else {
        Err(
            "it starts with neither `age-encryption.org/v1` nor `-----BEGIN AGE ENCRYPTED \
             FILE-----` (plaintext committed by mistake? encrypt it with `reconciler secret \
             encrypt`)",
        )
    }
}

fn header_problem(err: DecryptError) -> String {
    match err {
        DecryptError::Io(e) if e.kind() == ErrorKind::UnexpectedEof => {
            "the age header is cut short".to_owned()
        }
        // Some age messages span two lines; keep ours on one.
        other => other.to_string().replace('\n', " "),
    }
}

fn damaged(secret_name: &str, reason: String) -> SecretError {
    SecretError::Damaged {
        secret: secret_name.to_owned(),
        reason,
    }
}

/// Encrypts to every recipient, ASCII-armored: armored files diff and review sanely in git.
pub fn encrypt(plaintext: &[u8], recipients: &Recipients) -> Result<Vec<u8>, SecretError> {
    let failed = |reason: String| SecretError::Encrypt {
        origin: recipients.origin().to_owned(),
        reason,
    };
    let encryptor =
        Encryptor::with_recipients(recipients.iter()).map_err(|e| failed(e.to_string()))?;
    let write = || -> std::io::Result<Vec<u8>> {
        let armored = ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor)?;
        let mut writer = encryptor.wrap_output(armored)?;
        writer.write_all(plaintext)?;
        writer.finish()?.finish()
    };
    write().map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{generate_identity, parse_recipients};

    const PLAINTEXT: &[u8] = b"correct horse battery staple";

    fn keypair() -> (Identities, Recipients) {
        let (identity, recipient) = generate_identity();
        (
            Identities::from_text(&identity, "/keys/key.txt").unwrap(),
            parse_recipients(&recipient, "/repo/.age-recipients").unwrap(),
        )
    }

    fn encrypt_binary(plaintext: &[u8], recipients: &Recipients) -> Vec<u8> {
        let encryptor = Encryptor::with_recipients(recipients.iter()).unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(plaintext).unwrap();
        writer.finish().unwrap();
        out
    }

    fn assert_no_plaintext(err: &SecretError) {
        let needle = std::str::from_utf8(PLAINTEXT).unwrap();
        assert!(!err.to_string().contains(needle), "{err}");
        assert!(!format!("{err:?}").contains(needle), "{err:?}");
    }

    #[test]
    fn armored_round_trip() {
        let (identities, recipients) = keypair();
        let ciphertext = encrypt(PLAINTEXT, &recipients).unwrap();
        let text = std::str::from_utf8(&ciphertext).unwrap();
        assert!(
            text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"),
            "{text}"
        );
        assert!(
            text.ends_with("-----END AGE ENCRYPTED FILE-----\n"),
            "{text}"
        );
        let plaintext = decrypt("web_api_key", &ciphertext, &identities).unwrap();
        assert_eq!(plaintext.expose(), PLAINTEXT);
    }

    #[test]
    fn binary_round_trip() {
        let (identities, recipients) = keypair();
        let ciphertext = encrypt_binary(PLAINTEXT, &recipients);
        assert!(ciphertext.starts_with(b"age-encryption.org/v1\n"));
        let plaintext = decrypt("web_api_key", &ciphertext, &identities).unwrap();
        assert_eq!(plaintext.expose(), PLAINTEXT);
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let (identities, recipients) = keypair();
        let ciphertext = encrypt(b"", &recipients).unwrap();
        assert!(decrypt("empty", &ciphertext, &identities)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn every_recipient_can_decrypt() {
        let (ops_id, _) = generate_identity();
        let (cluster_id, _) = generate_identity();
        let ops = Identities::from_text(&ops_id, "ops").unwrap();
        let cluster = Identities::from_text(&cluster_id, "cluster").unwrap();
        let public = |text: &str| text.lines().nth(1).unwrap()["# public key: ".len()..].to_owned();
        let listed = format!("{}\n{}\n", public(&ops_id), public(&cluster_id));
        let recipients = parse_recipients(&listed, ".age-recipients").unwrap();
        assert_eq!(recipients.len(), 2);
        let ciphertext = encrypt(PLAINTEXT, &recipients).unwrap();
        for ids in [&ops, &cluster] {
            assert_eq!(decrypt("s", &ciphertext, ids).unwrap().expose(), PLAINTEXT);
        }
    }

    #[test]
    fn wrong_key_names_secret_and_identity_source_but_not_plaintext() {
        let (_, recipients) = keypair();
        let (other, _) = keypair();
        let ciphertext = encrypt(PLAINTEXT, &recipients).unwrap();
        let err = decrypt("web_api_key", &ciphertext, &other).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret \"web_api_key\": no identity can decrypt it (tried 1 identity from \
             /keys/key.txt); is the right key in --identity or RECONCILER_AGE_IDENTITY_FILE?"
        );
        assert_no_plaintext(&err);
    }

    #[test]
    fn plaintext_committed_as_age_is_not_an_age_file() {
        let (identities, _) = keypair();
        let err = decrypt("web_api_key", PLAINTEXT, &identities).unwrap_err();
        assert!(matches!(err, SecretError::NotAgeFile { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("secret \"web_api_key\": not an age file: "),
            "{err}"
        );
        assert_no_plaintext(&err);
    }

    #[test]
    fn empty_file_is_not_an_age_file() {
        let (identities, _) = keypair();
        let msg = decrypt("x", b"", &identities).unwrap_err().to_string();
        assert!(
            msg.starts_with("secret \"x\": not an age file: the file is empty"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_file_is_damaged() {
        let (identities, recipients) = keypair();
        let mut ciphertext = encrypt_binary(PLAINTEXT, &recipients);
        ciphertext.truncate(ciphertext.len() - 5);
        let err = decrypt("web_api_key", &ciphertext, &identities).unwrap_err();
        assert!(matches!(err, SecretError::Damaged { .. }), "{err:?}");
        assert!(err.to_string().contains("\"web_api_key\""), "{err}");
        assert_no_plaintext(&err);
    }

    #[test]
    fn passphrase_file_is_explained() {
        let mut scrypt = age::scrypt::Recipient::new("pw".to_owned().into());
        scrypt.set_work_factor(1); // keep the test fast
        let encryptor = Encryptor::with_recipients(std::iter::once(&scrypt as _)).unwrap();
        let mut ciphertext = Vec::new();
        let mut writer = encryptor.wrap_output(&mut ciphertext).unwrap();
        writer.write_all(PLAINTEXT).unwrap();
        writer.finish().unwrap();
        let (identities, _) = keypair();
        let msg = decrypt("db", &ciphertext, &identities)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("secret \"db\": encrypted with a passphrase"),
            "{msg}"
        );
    }

    #[test]
    fn missing_identity_error_names_secret_and_how_to_configure() {
        let msg = SecretError::NoIdentity {
            secret: "web_api_key".to_owned(),
        }
        .to_string();
        assert!(
            msg.starts_with(
                "secret \"web_api_key\": no age identity configured: pass --identity FILE or \
                 set RECONCILER_AGE_IDENTITY_FILE"
            ),
            "{msg}"
        );
    }
}
