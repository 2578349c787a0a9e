//! Talking to a running `reconciler up` over its HTTP API.

use anyhow::Context as _;
use serde::de::DeserializeOwned;

use super::up::DEFAULT_LISTEN;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The API of a running `reconciler up`.
    #[arg(long, env = "RECONCILER_SERVER", default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    pub server: String,
    /// The API token, for calls that change the cluster (rollback, sync). Default: the one
    /// the node keeps in its data dir (`api-token`), when this user may read it.
    #[arg(long, env = "RECONCILER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// The data dir of the node asked, where its API token is.
    #[arg(long, default_value = ".reconciler", env = "RECONCILER_DATA_DIR")]
    pub data_dir: std::path::PathBuf,
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        Self::with_timeout(args, std::time::Duration::from_secs(30))
    }

    /// A client whose calls give up after `timeout`.
    pub fn with_timeout(args: &ServerArgs, timeout: std::time::Duration) -> anyhow::Result<Self> {
        Ok(Client {
            base: args.server.trim_end_matches('/').to_string(),
            token: args
                .api_token
                .clone()
                .filter(|t| !t.is_empty())
                .or_else(|| crate::api::security::read_token_file(&args.data_dir)),
            http: reqwest::Client::builder().timeout(timeout).build()?,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.send(req)
    }

    fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        self.rt.block_on(async {
            let resp = req.send().await.with_context(|| {
                format!(
                    "cannot reach reconciler at {} (is `reconciler up` running?)",
                    self.base
                )
            })?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                anyhow::bail!("{msg}");
            }
            serde_json::from_slice(&body).context("unexpected answer from the server")
        })
    }
}
