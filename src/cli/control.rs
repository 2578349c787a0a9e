//! Reaching the cluster's control API the way the docker CLI reaches its daemon: through the
//! local node's control socket in its data dir (`--data-dir` picks a node; the socket's file
//! mode says who may), or at another manager with `--host`, over mutual TLS with the node's
//! certificate.

use std::path::PathBuf;

use tonic::transport::{Channel, Endpoint};

use crate::cluster::files::{KeysOnDisk, NodeFiles};
use crate::cluster::rpc::{self, pb};

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The data dir of a node of the cluster: the node is asked through its control socket
    /// there, or, with --host, its certificate is used.
    #[arg(long, default_value = ".reconciler", env = "RECONCILER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A manager's cluster address (host:port) to ask instead of the local node.
    #[arg(long, env = "RECONCILER_HOST")]
    pub host: Option<String>,
}

pub struct Control {
    /// The cluster address of the manager asked (the local node's own without --host).
    pub addr: String,
    /// The node whose data dir is used (whose identity the calls carry).
    pub node_id: String,
    /// How the manager is reached, for messages: its socket or its address.
    via: String,
    /// Asked through the local socket (where a locked node answers only `Lock`).
    local: bool,
    data_dir: PathBuf,
    pub client: pb::control_client::ControlClient<Channel>,
    pub rt: tokio::runtime::Runtime,
}

/// A lazy channel to the node's control socket.
pub fn dial_socket(path: PathBuf) -> anyhow::Result<Channel> {
    let connect = tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(NoSigpipe(stream)))
        }
    });
    // The URI is a placeholder: the connector above decides where to go.
    Ok(Endpoint::from_static("http://control.sock")
        .timeout(std::time::Duration::from_secs(60))
        .connect_with_connector_lazy(connect))
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (addr, via, local, channel) = match &args.host {
            None => {
                let socket = files.socket();
                let via = format!("the node at {}", socket.display());
                let channel = rt.block_on(async { dial_socket(socket) })?;
                (info.advertise_addr.clone(), via, true, channel)
            }
            Some(host) => {
                let keys = match files.keys()? {
                    KeysOnDisk::Open(keys) => keys,
                    KeysOnDisk::Locked(_) => anyhow::bail!(
                        "the keys in {} are sealed (autolock), so its certificate cannot be used with --host: ask the node through its socket (without --host)",
                        args.data_dir.display()
                    ),
                };
                let creds = crate::cluster::tls::Credentials::new(files.credentials(&keys)?)?;
                let channel = rt.block_on(async { rpc::dial(host, &creds) })?;
                (
                    host.clone(),
                    format!("the manager at {host}"),
                    false,
                    channel,
                )
            }
        };
        Ok(Control {
            addr,
            node_id: info.node_id.clone(),
            via,
            local,
            data_dir: args.data_dir.clone(),
            client: pb::control_client::ControlClient::new(channel)
                .max_decoding_message_size(crate::cluster::raft::network::MAX_MESSAGE),
            rt,
        })
    }

    /// Run a call; an error names the node asked.
    pub fn call<T>(
        &mut self,
        f: impl AsyncFnOnce(
            &mut pb::control_client::ControlClient<Channel>,
        ) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> anyhow::Result<T> {
        let client = &mut self.client;
        let answer = self.rt.block_on(async move { f(client).await });
        answer
            .map(tonic::Response::into_inner)
            .map_err(|s| self.explain(&s))
    }

    /// A call's refusal, or the channel's own error, in words.
    pub fn explain(&self, s: &tonic::Status) -> anyhow::Error {
        let via = &self.via;
        match s.message() {
            // The channel's own errors (what a node that is down gives), whatever code
            // tonic puts on them.
            m if m.contains("connect error") || m.contains("transport error") => {
                anyhow::anyhow!("cannot reach {via} (is the node running?): {m}")
            }
            // A locked node serves only `Lock` on its socket.
            _ if self.local && s.code() == tonic::Code::Unimplemented => anyhow::anyhow!(
                "{via} is locked (autolock): unlock it first with `reconciler unlock --data-dir {}`",
                self.data_dir.display()
            ),
            m => anyhow::anyhow!("{via}: {m}"),
        }
    }
}

/// A Unix stream whose writes never raise SIGPIPE. The command line keeps SIGPIPE's default
/// (so that `| head` ends it quietly), and a plain write to a socket the node has closed
/// (it stops, or leaves) would kill it without a word; here it is an error like any other.
struct NoSigpipe(tokio::net::UnixStream);

impl tokio::io::AsyncRead for NoSigpipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for NoSigpipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            let sent = self.0.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(&self.0).send_with_flags(buf, libc::MSG_NOSIGNAL)
            });
            match sent {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return std::task::Poll::Ready(other),
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
