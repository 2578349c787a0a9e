//! A node's part of its data dir: who it is (`node.json`), its certificates, and Raft's two
//! databases. `init` and `join` write them; `up` on the same data dir starts the node again
//! from them; the command line reads them to reach the cluster as the node does.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::ca::Role;
use super::tls::TlsPem;

/// Who this node is, and where its cluster listener is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub cluster_id: String,
    pub role: Role,
    /// The address the cluster listener binds.
    pub listen_addr: String,
    /// The address other nodes (and the command line) reach it on.
    pub advertise_addr: String,
    /// Managers this node knew last (a worker's way back in).
    #[serde(default)]
    pub managers: Vec<String>,
}

/// The paths, under one data dir.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    dir: PathBuf,
}

const INFO: &str = "node.json";
const CERTS: &str = "certificates";
const ROOT: &str = "root-ca.crt";
const CERT: &str = "node.crt";
const KEY: &str = "node.key";

impl NodeFiles {
    pub fn new(data_dir: &Path) -> NodeFiles {
        NodeFiles {
            dir: data_dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Does this data dir belong to a cluster already?
    pub fn exists(&self) -> bool {
        self.dir.join(INFO).exists()
    }

    pub fn raft_log(&self) -> PathBuf {
        self.dir.join("raft-log.redb")
    }

    pub fn raft_state(&self) -> PathBuf {
        self.dir.join("raft-state.redb")
    }

    pub fn load(&self) -> anyhow::Result<NodeInfo> {
        let path = self.dir.join(INFO);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    pub fn save(&self, info: &NodeInfo) -> anyhow::Result<()> {
        write_atomic(
            &self.dir.join(INFO),
            serde_json::to_string_pretty(info)?.as_bytes(),
            0o644,
        )
    }

    /// Forget the cluster (after `leave`): node.json first, so that an interrupted forget
    /// leaves a data dir that is no cluster's rather than half of one.
    pub fn forget(&self) -> anyhow::Result<()> {
        let remove = |p: PathBuf| match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", p.display()))
            }
            _ => Ok(()),
        };
        remove(self.dir.join(INFO))?;
        remove(self.raft_log())?;
        remove(self.raft_state())?;
        match std::fs::remove_dir_all(self.dir.join(CERTS)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.dir.join(CERTS).display()))
            }
            _ => Ok(()),
        }
    }

    /// Change `node.json` in place.
    pub fn update(&self, change: impl FnOnce(&mut NodeInfo)) -> anyhow::Result<()> {
        let mut info = self.load()?;
        change(&mut info);
        self.save(&info)
    }

    /// The node's certificate, key and the cluster's root, as its links use them.
    pub fn credentials(&self) -> anyhow::Result<TlsPem> {
        let dir = self.dir.join(CERTS);
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(TlsPem {
            root: read(ROOT)?,
            cert: read(CERT)?,
            key: read(KEY)?,
        })
    }

    /// Keep new credentials; the key is readable by its owner only.
    pub fn save_credentials(&self, tls: &TlsPem) -> anyhow::Result<()> {
        let dir = self.dir.join(CERTS);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join(KEY), tls.key.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT), tls.cert.as_bytes(), 0o644)?;
        write_atomic(&dir.join(ROOT), tls.root.as_bytes(), 0o644)
    }
}

/// Write a whole file or nothing: a crash leaves the old one.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
