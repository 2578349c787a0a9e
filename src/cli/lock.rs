//! Autolock from the command line, with Swarm's words: `unlock` gives a locked manager its
//! key, `unlock-key` shows (or rotates) it, `update --autolock` turns it on or off; `update`
//! also changes the cluster's age identity and git credentials.

use std::io::IsTerminal as _;

use crate::cluster::rpc::pb;

use super::control::{dial_socket, Control, NodeArgs};

#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct UnlockKeyArgs {
    /// Print the key only.
    #[arg(short, long)]
    quiet: bool,
    /// Replace the key: every manager seals its keys with the new one as it applies the
    /// change (a manager that is down then still takes the old key once).
    #[arg(long)]
    rotate: bool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Seal every manager's keys with an unlock key, so that a manager that restarts stays
    /// locked until it is given the key (`reconciler unlock`).
    #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
    autolock: Option<bool>,
    /// The age identity every manager opens the repository's secrets with, from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "remove_identity")]
    identity: Option<std::path::PathBuf>,
    /// Forget the cluster's age identity (each manager then uses its own, if any).
    #[arg(long)]
    remove_identity: bool,
    /// The token every manager sends to an http(s) remote, from the first line of this file
    /// (a file, so that the token shows neither in `ps` nor in the shell's history).
    #[arg(long, value_name = "FILE", conflicts_with = "remove_git_token")]
    git_token_file: Option<std::path::PathBuf>,
    /// Forget the cluster's git token.
    #[arg(long)]
    remove_git_token: bool,
    /// The private key (a file) every manager offers to an ssh remote.
    #[arg(long, value_name = "FILE", conflicts_with = "remove_ssh_key")]
    ssh_key: Option<std::path::PathBuf>,
    /// Forget the cluster's ssh key.
    #[arg(long)]
    remove_ssh_key: bool,
    #[command(flatten)]
    node: NodeArgs,
}

impl UpdateArgs {
    /// The change to the cluster's secrets the flags ask for (files read here).
    fn secrets(&self) -> anyhow::Result<crate::cluster::config::SecretsChange> {
        use anyhow::Context as _;
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let field = |value: Option<String>, remove: bool| match (value, remove) {
            (Some(v), _) => Some(Some(v)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        Ok(crate::cluster::config::SecretsChange {
            age_identity: field(
                self.identity.as_deref().map(read).transpose()?,
                self.remove_identity,
            ),
            git_token: field(
                self.git_token_file
                    .as_deref()
                    .map(read)
                    .transpose()?
                    .map(|t| t.lines().next().unwrap_or_default().trim().to_string()),
                self.remove_git_token,
            ),
            git_ssh_key: field(
                self.ssh_key.as_deref().map(read).transpose()?,
                self.remove_ssh_key,
            ),
        })
    }
}

/// What Swarm says beside an unlock key.
pub fn key_notice(key: &str) -> String {
    format!(
        "To unlock a manager after it restarts, run the `reconciler unlock`\ncommand and provide the following key:\n\n    {key}\n\nPlease remember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    )
}

pub fn unlock(args: UnlockArgs) -> anyhow::Result<i32> {
    let files = crate::cluster::files::NodeFiles::new(&args.node.data_dir);
    if !files.exists() {
        anyhow::bail!(
            "{} is not part of a cluster (no node.json)",
            args.node.data_dir.display()
        );
    }
    let key = read_key()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = files.socket();
    let answer = rt.block_on(async {
        pb::lock_client::LockClient::new(dial_socket(socket.clone())?)
            .unlock(pb::UnlockRequest {
                key: key.to_string(),
            })
            .await
            .map_err(|s| match s.message() {
                m if m.contains("connect error") || m.contains("transport error") => {
                    anyhow::anyhow!(
                        "cannot reach the node at {} (is it running?): {m}",
                        socket.display()
                    )
                }
                m => anyhow::anyhow!("{m}"),
            })
    });
    answer?;
    Ok(0)
}

/// The key, from the terminal without echo, or a line of stdin when it is not a terminal.
fn read_key() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let key = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Please enter unlock key: ")?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    };
    let key = zeroize::Zeroizing::new(key.trim().to_string());
    anyhow::ensure!(!key.is_empty(), "no unlock key was given");
    Ok(key)
}

pub fn unlock_key(args: UnlockKeyArgs) -> anyhow::Result<i32> {
    let mut control = Control::connect(&args.node)?;
    let rotate = args.rotate;
    let answer =
        control.call(async move |c| c.unlock_key(pb::UnlockKeyRequest { rotate }).await)?;
    if args.quiet {
        println!("{}", answer.key);
        return Ok(0);
    }
    if args.rotate {
        println!("Successfully rotated manager unlock key.\n");
    }
    print!("{}", key_notice(&answer.key));
    Ok(0)
}

pub fn update(args: UpdateArgs) -> anyhow::Result<i32> {
    let secrets = args.secrets()?;
    if args.autolock.is_none() && secrets.is_empty() {
        anyhow::bail!(
            "nothing to update: say what, e.g. --autolock=true, --identity FILE, --git-token-file FILE, --ssh-key FILE"
        );
    }
    let mut control = Control::connect(&args.node)?;
    let mut notice = None;
    if !secrets.is_empty() {
        let body =
            crate::cluster::rpc::json(&secrets).map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        control.call(async move |c| c.set_secrets(body).await)?;
    }
    if let Some(enable) = args.autolock {
        let answer =
            control.call(async move |c| c.autolock(pb::AutolockRequest { enable }).await)?;
        if enable {
            notice = Some(key_notice(&answer.key));
        }
    }
    println!("Cluster updated.");
    if let Some(notice) = notice {
        print!("{notice}");
    }
    Ok(0)
}
