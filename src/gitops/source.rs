//! Where the stacks repository lives and how to authenticate to it. Pure: classifying a location
//! and redacting credentials from it touch neither disk nor network.

use std::fmt;
use std::path::PathBuf;

/// The stacks repository to follow. `Debug` shows the URL without credentials.
#[derive(Clone, Default)]
pub struct Source {
    /// A local path, a `file://` URL, an `http(s)://` URL, an `ssh://` URL or scp-like
    /// `git@host:org/repo.git`.
    pub repo: String,
    /// The branch to track; `None` follows the remote's HEAD branch (falling back to `main`,
    /// then `master`).
    pub branch: Option<String>,
    pub auth: Auth,
}

impl Source {
    /// A source for `repo` tracking `branch` (or the remote's default), without credentials.
    pub fn new(repo: impl Into<String>, branch: Option<String>) -> Self {
        Source {
            repo: repo.into(),
            branch,
            auth: Auth::default(),
        }
    }

    pub fn location(&self) -> Location {
        Location::parse(&self.repo)
    }

    /// The repository location for messages and logs: never a password or token.
    pub fn display_url(&self) -> String {
        let shown = redact_url(&self.repo);
        match &self.auth.token {
            Some(token) => scrub(&shown, token),
            None => shown,
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("repo", &self.display_url())
            .field("branch", &self.branch)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Credentials for the remote. `Debug` never shows the token.
#[derive(Clone, Default)]
pub struct Auth {
    /// For http(s): sent as the basic-auth password, with the user named in the URL or
    /// `x-access-token` (what GitHub, Gitea and GitLab accept for access tokens).
    pub token: Option<String>,
    /// For ssh: a private key file (unencrypted). Without one the ssh agent is asked.
    pub ssh_key: Option<PathBuf>,
    /// For ssh: a private key's PEM text (the cluster's), used before `ssh_key`.
    pub ssh_key_pem: Option<zeroize::Zeroizing<String>>,
    pub ssh_host_key: HostKeyCheck,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .field(
                "ssh_key_pem",
                &self.ssh_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("ssh_host_key", &self.ssh_host_key)
            .finish()
    }
}

/// How an ssh server's host key is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// libgit2's own check against `~/.ssh/known_hosts` (of `$HOME`): an unknown host is refused.
    #[default]
    KnownHosts,
    /// Accept any host key. Only for tests and trusted networks: it allows a man in the middle.
    AcceptAny,
}

/// What kind of location a `Source::repo` string names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine (a work tree or a bare repository).
    Path(PathBuf),
    /// A `file://` URL; the path it names.
    File(PathBuf),
    /// `http://` or `https://`.
    Http,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
    /// Some other scheme (`git://`...), passed to libgit2 as it is.
    Other(String),
}

impl Location {
    /// Classify a location the way git does: a scheme is a URL, a colon before any slash is
    /// scp-like ssh, anything else a path.
    pub fn parse(repo: &str) -> Location {
        if let Some((scheme, rest)) = repo.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "file" => Location::File(PathBuf::from(rest)),
                "http" | "https" => Location::Http,
                "ssh" | "git+ssh" | "ssh+git" => Location::Ssh,
                other => Location::Other(other.to_string()),
            };
        }
        let colon = repo.find(':');
        let slash = repo.find('/');
        match (colon, slash) {
            // `C:` on Windows is a drive letter, not a host.
            (Some(1), _) if cfg!(windows) => Location::Path(PathBuf::from(repo)),
            (Some(c), None) if c > 0 => Location::Ssh,
            (Some(c), Some(s)) if c > 0 && c < s => Location::Ssh,
            _ => Location::Path(PathBuf::from(repo)),
        }
    }

    /// The path of a repository on this machine, for the file watcher.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Path(p) | Location::File(p) => Some(p),
            _ => None,
        }
    }
}

/// Hide the credentials in a URL's user-info: `https://u:secret@h/r` → `https://u:***@h/r`; a
/// lone http(s) user (`https://ghp_x@h/r`) is often a token too, so it is hidden as well.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let shown = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
            "***".to_string()
        }
        None => userinfo.to_string(),
    };
    format!("{scheme}://{shown}@{host}{path}")
}

/// Remove every occurrence of `secret` from `text` (libgit2 messages may echo URLs).
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "***")
    }
}

/// The user name written in a URL (`https://bob@host/..`, `ssh://git@host/..`, `git@host:..`).
pub fn url_user(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    (!user.is_empty()).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_locations_like_git() {
        assert_eq!(
            Location::parse("/srv/stacks"),
            Location::Path("/srv/stacks".into())
        );
        assert_eq!(Location::parse("stacks"), Location::Path("stacks".into()));
        assert_eq!(
            Location::parse("./a:b"),
            Location::Path("./a:b".into()),
            "a colon after a slash is part of a path"
        );
        assert_eq!(
            Location::parse("file:///srv/stacks"),
            Location::File("/srv/stacks".into())
        );
        assert_eq!(Location::parse("https://h/o/r.git"), Location::Http);
        assert_eq!(Location::parse("HTTP://h/o/r.git"), Location::Http);
        assert_eq!(Location::parse("ssh://git@h:22/o/r.git"), Location::Ssh);
        assert_eq!(
            Location::parse("git@github.com:org/repo.git"),
            Location::Ssh
        );
        assert_eq!(Location::parse("host:repo.git"), Location::Ssh);
        assert_eq!(
            Location::parse("git://h/r"),
            Location::Other("git".to_string())
        );
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://bob:hunter2@h.example/o/r.git"),
            "https://bob:***@h.example/o/r.git"
        );
        assert_eq!(
            redact_url("https://ghp_abc@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        assert_eq!(redact_url("ssh://git@h/o/r"), "ssh://git@h/o/r");
        assert_eq!(redact_url("https://h/o/r@v2"), "https://h/o/r@v2");
        assert_eq!(redact_url("/srv/x"), "/srv/x");
        assert_eq!(redact_url("git@h:o/r.git"), "git@h:o/r.git");
    }

    #[test]
    fn display_url_never_shows_the_token() {
        let mut s = Source::new("https://h/tok3n/r.git", None);
        s.auth.token = Some("tok3n".into());
        assert_eq!(s.display_url(), "https://h/***/r.git");
        assert!(!format!("{s:?}").contains("tok3n"));
        let s = Source::new("https://bob:pw0rd@h/r.git", None);
        assert!(!format!("{s:?}").contains("pw0rd"));
    }

    #[test]
    fn finds_the_user_in_a_url() {
        assert_eq!(url_user("https://bob:pw@h/r"), Some("bob"));
        assert_eq!(url_user("https://h/r"), None);
        assert_eq!(url_user("ssh://git@h/r"), Some("git"));
        assert_eq!(url_user("git@h:o/r.git"), Some("git"));
        assert_eq!(url_user("https://h/a@b"), None);
    }
}
