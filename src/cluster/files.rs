//! A node's part of its data dir: who it is (`node.json`), its certificates, and Raft's two
//! databases. `init` and `join` write them; `up` on the same data dir starts the node again
//! from them; the command line reads them to reach the cluster as the node does.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::ca::Role;
use super::seal::{DataKey, UnlockKey};
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
const DATA_KEY: &str = "data.key";
const LOCKED: &str = "keys.locked";
const SOCKET: &str = "control.sock";

/// The keys a node keeps secret: its TLS private key and the data key its Raft files are
/// sealed with.
#[derive(Clone)]
pub struct NodeKeys {
    pub tls_key: zeroize::Zeroizing<String>,
    pub data_key: DataKey,
}

/// The keys as the data dir holds them.
pub enum KeysOnDisk {
    Open(NodeKeys),
    /// Sealed by the cluster's unlock key (autolock): the node is locked until given it.
    Locked(Vec<u8>),
}

/// What `keys.locked` seals.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedKeys {
    tls_key: String,
    data_key: String,
}

/// The purpose the locked keys are sealed for.
const LOCKED_PURPOSE: &str = "node-keys";

impl NodeKeys {
    /// Open keys sealed by `unlock`; `None` when it is not the key that sealed them.
    pub fn unlock(sealed: &[u8], unlock: &UnlockKey) -> anyhow::Result<Option<NodeKeys>> {
        let plain = match unlock.key().open(LOCKED_PURPOSE, sealed) {
            Ok(p) => zeroize::Zeroizing::new(p),
            Err(super::seal::SealError::WrongKey) => return Ok(None),
            Err(e) => anyhow::bail!("{LOCKED}: {e}"),
        };
        let keys: SealedKeys =
            serde_json::from_slice(&plain).with_context(|| format!("{LOCKED} is damaged"))?;
        let keys = NodeKeys {
            data_key: data_key_from_hex(&keys.data_key)?,
            tls_key: zeroize::Zeroizing::new(keys.tls_key),
        };
        Ok(Some(keys))
    }
}

fn data_key_from_hex(text: &str) -> anyhow::Result<DataKey> {
    let bytes = zeroize::Zeroizing::new(
        hex::decode(text.trim()).map_err(|_| anyhow::anyhow!("{DATA_KEY} is not hex"))?,
    );
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{DATA_KEY} is not a 256-bit key"))?;
    Ok(DataKey::from_bytes(bytes))
}

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

    /// The node's local control socket: the command line on this machine asks the node
    /// through it, as the docker CLI asks its daemon; who may open it is the file's mode.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
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
        remove(self.socket())?;
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

    /// The node's certificate and the cluster's root, in PEM.
    pub fn certificates(&self) -> anyhow::Result<(String, String)> {
        let dir = self.dir.join(CERTS);
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok((read(ROOT)?, read(CERT)?))
    }

    /// The node's keys: in the clear, or sealed (autolock). A data dir from before data
    /// keys gets one (its Raft files, in the clear, are then refused with a clear message).
    pub fn keys(&self) -> anyhow::Result<KeysOnDisk> {
        let dir = self.dir.join(CERTS);
        let (key, data, locked) = (dir.join(KEY), dir.join(DATA_KEY), dir.join(LOCKED));
        // Keys in the clear win: a crash while locking leaves both, and the node seals
        // them again once it runs.
        if key.exists() {
            let tls_key = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key)
                    .with_context(|| format!("reading {}", key.display()))?,
            );
            let data_key = match std::fs::read_to_string(&data) {
                Ok(text) => data_key_from_hex(&zeroize::Zeroizing::new(text))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let k = DataKey::generate()?;
                    write_atomic(&data, hex::encode(k.as_bytes()).as_bytes(), 0o600)?;
                    k
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", data.display())),
            };
            return Ok(KeysOnDisk::Open(NodeKeys { tls_key, data_key }));
        }
        match std::fs::read(&locked) {
            Ok(bytes) => Ok(KeysOnDisk::Locked(
                hex::decode(bytes.trim_ascii())
                    .with_context(|| format!("{} is damaged", locked.display()))?,
            )),
            Err(e) => Err(e).with_context(|| format!("reading {}", key.display())),
        }
    }

    /// The TLS credentials: the certificates on disk with the key given.
    pub fn credentials(&self, keys: &NodeKeys) -> anyhow::Result<TlsPem> {
        let (root, cert) = self.certificates()?;
        Ok(TlsPem {
            root,
            cert,
            key: keys.tls_key.to_string(),
        })
    }

    /// Keep the keys: sealed by `lock` (autolock), or in the clear, readable by the owner
    /// only. The new form is written before the old is removed.
    pub fn save_keys(&self, keys: &NodeKeys, lock: Option<&UnlockKey>) -> anyhow::Result<()> {
        let dir = self.dir.join(CERTS);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let remove = |name: &str| match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.join(name).display()))
            }
            _ => Ok(()),
        };
        let data_hex = zeroize::Zeroizing::new(hex::encode(keys.data_key.as_bytes()));
        match lock {
            Some(unlock) => {
                let plain = zeroize::Zeroizing::new(serde_json::to_vec(&SealedKeys {
                    tls_key: keys.tls_key.to_string(),
                    data_key: data_hex.to_string(),
                })?);
                let sealed = unlock.key().seal(LOCKED_PURPOSE, &plain);
                write_atomic(&dir.join(LOCKED), hex::encode(sealed).as_bytes(), 0o600)?;
                remove(KEY)?;
                remove(DATA_KEY)
            }
            None => {
                write_atomic(&dir.join(KEY), keys.tls_key.as_bytes(), 0o600)?;
                write_atomic(&dir.join(DATA_KEY), data_hex.as_bytes(), 0o600)?;
                remove(LOCKED)
            }
        }
    }

    /// Are the keys on disk sealed now?
    pub fn is_locked(&self) -> bool {
        let dir = self.dir.join(CERTS);
        dir.join(LOCKED).exists() && !dir.join(KEY).exists()
    }

    /// Keep new certificates (the keys are kept by [`NodeFiles::save_keys`]).
    pub fn save_certificates(&self, root: &str, cert: &str) -> anyhow::Result<()> {
        let dir = self.dir.join(CERTS);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join(CERT), cert.as_bytes(), 0o644)?;
        write_atomic(&dir.join(ROOT), root.as_bytes(), 0o644)
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
