//! `reconciler secret ...` run as a real process: keygen, encrypt, and decrypting the result
//! with the library. Plaintext must never show up on stdout or stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use reconciler::secrets::{self, Identities, RECIPIENTS_FILE};

const PLAINTEXT: &str = "s3cr3t-token-do-not-print";

fn reconciler(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(args)
        .current_dir(dir)
        .env_remove(secrets::IDENTITY_FILE_ENV)
        .env_remove(secrets::IDENTITY_ENV)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reconciler");
    if let Some(input) = stdin {
        // A command that fails before reading stdin closes the pipe: that is not a test failure.
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_quiet_about_plaintext(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(!text(stream).contains(PLAINTEXT), "{}", text(stream));
    }
}

/// A stacks dir with a fresh key in `key.txt` (outside the stacks dir) and its recipient listed.
fn stacks_with_key(root: &Path) -> (PathBuf, PathBuf) {
    let stacks = root.join("stacks");
    std::fs::create_dir_all(stacks.join("web/secrets")).unwrap();
    let out = reconciler(root, &["secret", "keygen", "-o", "key.txt"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let recipients = format!("# cluster key\n{}", text(&out.stdout));
    std::fs::write(stacks.join(RECIPIENTS_FILE), recipients).unwrap();
    (stacks, root.join("key.txt"))
}

#[test]
fn keygen_writes_an_owner_only_identity_and_prints_its_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let out = reconciler(dir.path(), &["secret", "keygen", "-o", "key.txt"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let recipient = text(&out.stdout);
    assert!(recipient.starts_with("age1") && recipient.ends_with('\n'));
    assert_eq!(recipient.lines().count(), 1, "{recipient}");
    assert!(!text(&out.stderr).contains("AGE-SECRET-KEY"));

    let key = dir.path().join("key.txt");
    let identity = std::fs::read_to_string(&key).unwrap();
    assert!(identity.contains(&format!("# public key: {recipient}")));
    assert_eq!(Identities::from_file(&key).unwrap().len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn keygen_refuses_to_overwrite_an_identity() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), "precious").unwrap();
    let out = reconciler(dir.path(), &["secret", "keygen", "-o", "key.txt"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refusing to overwrite"),
        "{}",
        text(&out.stderr)
    );
    let kept = std::fs::read_to_string(dir.path().join("key.txt")).unwrap();
    assert_eq!(kept, "precious");
}

#[test]
fn keygen_without_output_prints_identity_on_stdout_and_recipient_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = reconciler(dir.path(), &["secret", "keygen"], None);
    assert_eq!(out.status.code(), Some(0));
    let identities = Identities::from_text(&text(&out.stdout), "stdout").unwrap();
    assert_eq!(identities.len(), 1);
    assert!(text(&out.stderr).starts_with("Public key: age1"));
}

#[test]
fn encrypt_writes_armored_input_dot_age_that_the_identity_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let (stacks, key) = stacks_with_key(dir.path());
    std::fs::write(stacks.join("web/secrets/api_key"), PLAINTEXT).unwrap();

    let out = reconciler(&stacks, &["secret", "encrypt", "web/secrets/api_key"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_quiet_about_plaintext(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("web/secrets/api_key.age"), "{stderr}");
    assert!(stderr.contains("1 recipient"), "{stderr}");

    let ciphertext = std::fs::read(stacks.join("web/secrets/api_key.age")).unwrap();
    assert!(ciphertext.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    let identities = Identities::from_file(&key).unwrap();
    let plaintext = secrets::decrypt("web_api_key", &ciphertext, &identities).unwrap();
    assert_eq!(plaintext.expose(), PLAINTEXT.as_bytes());
}

#[test]
fn encrypt_reads_stdin_with_explicit_stacks_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = stacks_with_key(dir.path());
    let args = [
        "secret",
        "encrypt",
        "--stacks",
        "stacks",
        "-o",
        "token.age",
        "-",
    ];
    let out = reconciler(dir.path(), &args, Some(PLAINTEXT.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_quiet_about_plaintext(&out);

    let ciphertext = std::fs::read(dir.path().join("token.age")).unwrap();
    let identities = Identities::from_file(&key).unwrap();
    let plaintext = secrets::decrypt("token", &ciphertext, &identities).unwrap();
    assert_eq!(plaintext.expose(), PLAINTEXT.as_bytes());
}

#[test]
fn encrypt_from_stdin_needs_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let (stacks, _) = stacks_with_key(dir.path());
    let out = reconciler(
        &stacks,
        &["secret", "encrypt", "-"],
        Some(PLAINTEXT.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--output"),
        "{}",
        text(&out.stderr)
    );
    assert_quiet_about_plaintext(&out);
}

#[test]
fn encrypt_without_recipients_file_explains_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api_key"), PLAINTEXT).unwrap();
    let out = reconciler(dir.path(), &["secret", "encrypt", "api_key"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: no recipients file at ./.age-recipients"),
        "{stderr}"
    );
    assert!(stderr.contains("reconciler secret keygen"), "{stderr}");
    assert!(!dir.path().join("api_key.age").exists());
    assert_quiet_about_plaintext(&out);
}

#[test]
fn encrypt_with_a_malformed_recipients_file_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (stacks, _) = stacks_with_key(dir.path());
    let recipients = stacks.join(RECIPIENTS_FILE);
    let mut listed = std::fs::read_to_string(&recipients).unwrap();
    listed.push_str("age1notakey\n");
    std::fs::write(&recipients, listed).unwrap();
    std::fs::write(stacks.join("api_key"), PLAINTEXT).unwrap();

    let out = reconciler(&stacks, &["secret", "encrypt", "api_key"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("./.age-recipients:3: not an age recipient: \"age1notakey\""),
        "{stderr}"
    );
    assert_quiet_about_plaintext(&out);
}

#[test]
fn example_secret_decrypts_with_the_example_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let identities = Identities::from_file(&root.join("keys/example-only.agekey")).unwrap();
    let recipients = std::fs::read_to_string(root.join("stacks").join(RECIPIENTS_FILE)).unwrap();
    assert_eq!(
        secrets::parse_recipients(&recipients, "examples")
            .unwrap()
            .len(),
        1
    );
    let ciphertext = std::fs::read(root.join("stacks/web/secrets/api_key.age")).unwrap();
    let plaintext = secrets::decrypt("web_api_key", &ciphertext, &identities).unwrap();
    assert_eq!(plaintext.expose(), b"example-api-key-not-a-real-secret");
}
