//! A task's secret and config files on the host, bind-mounted read-only into its container.
//!
//! They live in one directory per task, on a tmpfs when the host has one where we can write, so
//! decrypted secrets never reach a persistent disk (Swarm does the same with a tmpfs under the
//! container's directory). The directory is removed with the container. File names on the host
//! are positional (`secret-0`, `config-1`), never derived from the target, so a target cannot
//! point the write outside the task directory.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::secrets::SecretBytes;
use crate::spec::model::FileMount;

/// Where task directories go, in order of preference; the first on a tmpfs wins. Each node has
/// its own directory under it (several nodes may share a machine, and each prunes only its
/// own).
const TMPFS_CANDIDATES: [&str; 2] = ["/run/reconciler", "/dev/shm/reconciler"];

/// The root under which each task gets a directory named by its task id.
#[derive(Clone, Debug)]
pub struct TaskFiles {
    root: PathBuf,
    on_tmpfs: bool,
}

/// One file to bind into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBind {
    pub host_path: PathBuf,
    pub target: String,
}

impl TaskFiles {
    /// The node's directory under the first candidate root on a tmpfs, or under the system
    /// temp dir (with a warning: secrets would then touch a disk).
    pub fn choose(node_id: &str) -> Self {
        let node = if valid_task_id(node_id) {
            node_id
        } else {
            "node"
        };
        for candidate in TMPFS_CANDIDATES {
            let base = Path::new(candidate);
            let path = base.join(node).join("tasks");
            if is_on_tmpfs(base) && fs::create_dir_all(&path).is_ok() {
                return TaskFiles::at(&path, true);
            }
        }
        let fallback = std::env::temp_dir().join("reconciler-tasks").join(node);
        tracing::warn!(
            dir = %fallback.display(),
            "no writable tmpfs found at /run or /dev/shm: secret and config files go to disk"
        );
        TaskFiles::at(&fallback, false)
    }

    pub fn at(root: &Path, on_tmpfs: bool) -> Self {
        TaskFiles {
            root: root.to_path_buf(),
            on_tmpfs,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn on_tmpfs(&self) -> bool {
        self.on_tmpfs
    }

    /// The task's directory (whether or not it exists). `task_id` must have been checked with
    /// [`valid_task_id`].
    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    /// Write the task's files, replacing any left from an earlier attempt, and return the binds.
    pub fn write(
        &self,
        task_id: &str,
        secrets: &[(FileMount, SecretBytes)],
        configs: &[(FileMount, Vec<u8>)],
    ) -> io::Result<Vec<FileBind>> {
        if secrets.is_empty() && configs.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.task_dir(task_id);
        self.remove(task_id)?;
        create_private_dir(&self.root)?;
        create_private_dir(&dir)?;
        let secret_files = secrets.iter().enumerate().map(|(i, (mount, content))| {
            let bind = FileBind {
                host_path: dir.join(format!("secret-{i}")),
                target: secret_target(&mount.target),
            };
            (bind, mount, content.expose())
        });
        let config_files = configs.iter().enumerate().map(|(i, (mount, content))| {
            let bind = FileBind {
                host_path: dir.join(format!("config-{i}")),
                target: config_target(&mount.target),
            };
            (bind, mount, content.as_slice())
        });
        let mut binds = Vec::new();
        for (bind, mount, content) in secret_files.chain(config_files) {
            write_owned_file(&bind.host_path, content, mount)?;
            binds.push(bind);
        }
        Ok(binds)
    }

    /// Remove the task's directory; a directory that is not there is fine.
    pub fn remove(&self, task_id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.task_dir(task_id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The task ids that have a directory, for pruning directories whose container is gone.
    pub fn task_ids(&self) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let mut ids = Vec::new();
        for entry in entries {
            if let Some(name) = entry?.file_name().to_str() {
                if valid_task_id(name) {
                    ids.push(name.to_string());
                }
            }
        }
        Ok(ids)
    }
}

/// Task ids become a directory and part of a container name: `[A-Za-z0-9_.-]`, not `.`/`..`.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Secrets go under /run/secrets unless the target is already absolute (as Swarm allows).
pub fn secret_target(target: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/run/secrets/{target}")
    }
}

/// Configs are absolute paths; a bare name goes to the root, as Swarm does.
pub fn config_target(target: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/{target}")
    }
}

/// Parse a numeric uid or gid; names cannot be resolved without the image's /etc/passwd, and
/// Swarm requires numbers too.
pub fn numeric_id(what: &str, value: &str) -> Result<u32, String> {
    if value.is_empty() {
        return Ok(0);
    }
    value
        .parse()
        .map_err(|_| format!("{what} {value:?} must be a number (names are not resolved)"))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    // Only root on the host needs to get in: the container sees the file through its bind.
    fs::set_permissions(dir, Permissions::from_mode(0o700))
}

fn write_owned_file(path: &Path, content: &[u8], mount: &FileMount) -> io::Result<()> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let uid = numeric_id("uid", &mount.uid).map_err(invalid)?;
    let gid = numeric_id("gid", &mount.gid).map_err(invalid)?;
    // Created owner-only, so the content is never readable by anyone else, even briefly.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    // After chown, which may clear set-id bits.
    fs::set_permissions(path, Permissions::from_mode(mount.mode & 0o7777))
}

/// True when the longest mount point containing `path` (or its nearest existing ancestor) is a
/// tmpfs, according to /proc/self/mountinfo.
pub fn is_on_tmpfs(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    fs_type_of(&info, path).is_some_and(|t| t == "tmpfs")
}

fn fs_type_of<'a>(mountinfo: &'a str, path: &Path) -> Option<&'a str> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <maj:min> <root> <mount point> <opts> ... - <fstype> <source> ..."
            let mount_point = unescape(line.split(' ').nth(4)?);
            let fs_type = line.split(" - ").nth(1)?.split(' ').next()?;
            path.starts_with(&mount_point)
                .then_some((mount_point.len(), fs_type))
        })
        // Later lines win ties: they are mounted on top.
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs_type)| fs_type)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest
            .get(pos + 1..pos + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(target: &str, mode: u32) -> FileMount {
        FileMount {
            object: "shop_key".into(),
            version: "0123456789abcdef".into(),
            target: target.into(),
            uid: String::new(),
            gid: String::new(),
            mode,
        }
    }

    #[test]
    fn writes_files_with_mode_and_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let files = TaskFiles::at(tmp.path(), false);
        let mut own = mount("key", 0o440);
        own.uid = std::fs::metadata(tmp.path())
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap()
            .to_string();
        let binds = files
            .write(
                "task1",
                &[(own, SecretBytes::new(b"s3cret".to_vec()))],
                &[(mount("/etc/app.conf", 0o644), b"x=1".to_vec())],
            )
            .unwrap();
        assert_eq!(binds[0].target, "/run/secrets/key");
        assert_eq!(binds[1].target, "/etc/app.conf");
        assert_eq!(fs::read(&binds[0].host_path).unwrap(), b"s3cret");
        let mode = fs::metadata(&binds[0].host_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o440);
        assert_eq!(files.task_ids().unwrap(), ["task1"]);
        files.remove("task1").unwrap();
        assert!(!files.task_dir("task1").exists());
        files.remove("task1").unwrap();
    }

    #[test]
    fn nothing_to_write_creates_no_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let files = TaskFiles::at(&tmp.path().join("root"), false);
        assert!(files.write("t", &[], &[]).unwrap().is_empty());
        assert!(!files.root().exists());
    }

    #[test]
    fn task_ids_are_checked() {
        assert!(valid_task_id("k3j4h5.1-x_y"));
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(!valid_task_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn targets_and_ids() {
        assert_eq!(secret_target("db_password"), "/run/secrets/db_password");
        assert_eq!(secret_target("/etc/ssl/key.pem"), "/etc/ssl/key.pem");
        assert_eq!(config_target("nginx.conf"), "/nginx.conf");
        assert_eq!(numeric_id("uid", "1000"), Ok(1000));
        assert_eq!(numeric_id("uid", ""), Ok(0));
        assert!(numeric_id("uid", "www-data")
            .unwrap_err()
            .contains("must be a number"));
    }

    #[test]
    fn mountinfo_longest_prefix_wins() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
30 22 0:25 / /dev/shm rw,nosuid - tmpfs tmpfs rw
31 22 0:26 / /my\\040dir rw - tmpfs tmpfs rw
";
        assert_eq!(
            fs_type_of(info, Path::new("/dev/shm/reconciler/tasks")),
            Some("tmpfs")
        );
        assert_eq!(fs_type_of(info, Path::new("/run/reconciler")), Some("ext4"));
        assert_eq!(fs_type_of(info, Path::new("/my dir/x")), Some("tmpfs"));
        // Component-wise: /dev/shmx is not under /dev/shm.
        assert_eq!(fs_type_of(info, Path::new("/dev/shmx")), Some("ext4"));
    }
}
