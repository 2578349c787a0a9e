//! `reconciler secret ...`: make age keys and encrypt secrets for the stacks repo. Content never
//! reaches the terminal: messages say which files were written and for whom, nothing more.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use zeroize::Zeroizing;

use crate::secrets::{self, RECIPIENTS_FILE};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Encrypt a file to the recipients in the stacks' .age-recipients (ASCII-armored age).
    Encrypt(EncryptArgs),
    /// Generate an age identity (private key) and print its public key.
    Keygen(KeygenArgs),
}

#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// The stacks directory, whose .age-recipients lists the public keys to encrypt to.
    #[arg(long, value_name = "DIR", default_value = ".")]
    stacks: PathBuf,

    /// Recipients file to use instead of DIR/.age-recipients (format of `age -R`).
    #[arg(long, value_name = "FILE")]
    recipients: Option<PathBuf>,

    /// Where to write the encrypted file ("-" for stdout). Default: INPUT.age.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// The plaintext file, or "-" to read stdin (then --output is required).
    #[arg(value_name = "INPUT")]
    input: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Write the identity to FILE (mode 0600; never overwritten) and print only the public key
    /// on stdout, ready for `>> .age-recipients`. Without it (or with "-") the identity goes to
    /// stdout and the public key to stderr, like age-keygen.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Encrypt(args) => encrypt(args),
        Command::Keygen(args) => keygen(args),
    }
    .map(|()| 0)
}

fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    let recipients_path = args
        .recipients
        .unwrap_or_else(|| args.stacks.join(RECIPIENTS_FILE));
    let output = output_path(&args.input, args.output)?;
    let recipients = read_recipients(&recipients_path)?;
    let plaintext = read_input(&args.input)?;
    let ciphertext = secrets::encrypt(&plaintext, &recipients)?;
    write_output(&output, &ciphertext)?;
    eprintln!(
        "encrypted {} to {} for {} {} in {}",
        describe(&args.input, "stdin"),
        describe(&output, "stdout"),
        recipients.len(),
        if recipients.len() == 1 {
            "recipient"
        } else {
            "recipients"
        },
        recipients_path.display(),
    );
    Ok(())
}

fn read_recipients(path: &Path) -> anyhow::Result<secrets::Recipients> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "no recipients file at {path}: create one with \
             `reconciler secret keygen -o key.txt >> {path}` (keep key.txt out of git), \
             or pass --stacks DIR or --recipients FILE",
            path = path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(secrets::parse_recipients(
        &text,
        &path.display().to_string(),
    )?)
}

/// The output path: explicit, or INPUT.age. Stdin has no name to derive one from.
fn output_path(input: &Path, output: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(output) = output {
        return Ok(output);
    }
    if is_stdio(input) {
        bail!("reading the plaintext from stdin needs --output FILE (or -o - for stdout)");
    }
    if input.extension().is_some_and(|ext| ext == "age") {
        bail!(
            "{} already ends in .age; pass --output to encrypt it anyway",
            input.display()
        );
    }
    let mut name = input.as_os_str().to_owned();
    name.push(".age");
    Ok(PathBuf::from(name))
}

fn read_input(input: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut plaintext = Zeroizing::new(Vec::new());
    if is_stdio(input) {
        io::stdin()
            .read_to_end(&mut plaintext)
            .context("reading the plaintext from stdin")?;
    } else {
        *plaintext = fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    }
    Ok(plaintext)
}

/// Writes through a temporary sibling and a rename, so an interrupted run never leaves a
/// truncated .age file for the reconciler to choke on.
fn write_output(output: &Path, ciphertext: &[u8]) -> anyhow::Result<()> {
    if is_stdio(output) {
        return io::stdout()
            .write_all(ciphertext)
            .context("writing to stdout");
    }
    let mut tmp = output.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = fs::write(&tmp, ciphertext).and_then(|()| fs::rename(&tmp, output));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", output.display()))
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let (identity, recipient) = secrets::generate_identity();
    let identity = Zeroizing::new(identity);
    let Some(path) = args.output.filter(|path| !is_stdio(path)) else {
        print!("{}", identity.as_str());
        eprintln!("Public key: {recipient}");
        return Ok(());
    };
    write_private(&path, identity.as_bytes())?;
    println!("{recipient}");
    eprintln!(
        "wrote a new age identity to {} (keep it secret, keep it out of git); \
         its public key is on stdout: append it to the stacks' {RECIPIENTS_FILE}",
        path.display()
    );
    Ok(())
}

/// Creates `path` readable by its owner only, refusing to replace an existing key: losing a key
/// loses every secret encrypted only to it.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => bail!(
            "{} already exists; refusing to overwrite an identity (move it away or choose \
             another --output)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn describe(path: &Path, stdio: &str) -> String {
    if is_stdio(path) {
        stdio.to_owned()
    } else {
        path.display().to_string()
    }
}
