//! Reaching the cluster's control API the way the docker CLI reaches its daemon: as the local
//! node, with the certificate and address its data dir holds (`--data-dir` picks a node), or
//! at another manager with `--host`.

use std::path::PathBuf;

use tonic::transport::Channel;

use crate::cluster::files::NodeFiles;
use crate::cluster::rpc::{self, pb};

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The data dir of a node of the cluster: its certificate is used, and, as long as
    /// --host does not say otherwise, its address.
    #[arg(long, default_value = ".reconciler", env = "RECONCILER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A manager's cluster address (host:port) to ask instead of the node's own.
    #[arg(long, env = "RECONCILER_HOST")]
    pub host: Option<String>,
}

pub struct Control {
    pub addr: String,
    /// The node whose data dir is used (whose certificate the calls show).
    pub node_id: String,
    pub client: pb::control_client::ControlClient<Channel>,
    pub rt: tokio::runtime::Runtime,
}

impl Control {
    pub fn connect(args: &NodeArgs) -> anyhow::Result<Control> {
        let files = NodeFiles::new(&args.data_dir);
        if !files.exists() {
            anyhow::bail!(
                "{} is not the data dir of a node (no node.json): give the one `reconciler init`, `join` or `up` was started with (--data-dir)",
                args.data_dir.display()
            );
        }
        let info = files.load()?;
        let creds = crate::cluster::tls::Credentials::new(files.credentials()?)?;
        let addr = args
            .host
            .clone()
            .unwrap_or_else(|| info.advertise_addr.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = rt.block_on(async { rpc::dial(&addr, &creds) })?;
        Ok(Control {
            addr,
            node_id: info.node_id.clone(),
            client: pb::control_client::ControlClient::new(channel)
                .max_decoding_message_size(crate::cluster::raft::network::MAX_MESSAGE),
            rt,
        })
    }

    /// Run a call; an error names the manager asked.
    pub fn call<T>(
        &mut self,
        f: impl AsyncFnOnce(
            &mut pb::control_client::ControlClient<Channel>,
        ) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> anyhow::Result<T> {
        let addr = self.addr.clone();
        let client = &mut self.client;
        self.rt
            .block_on(async move { f(client).await })
            .map(tonic::Response::into_inner)
            .map_err(|s| match s.message() {
                // The channel's own errors (what a node that is down gives), whatever code
                // tonic puts on them.
                m if m.contains("connect error") || m.contains("transport error") => {
                    anyhow::anyhow!(
                        "cannot reach the manager at {addr} (is the node running?): {}",
                        s.message()
                    )
                }
                _ => anyhow::anyhow!("the manager at {addr}: {}", s.message()),
            })
    }
}
