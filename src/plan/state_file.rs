//! The state export file read by `reconciler plan --against-state FILE`: a versioned JSON
//! snapshot of what a cluster runs. Documented in docs/state-format.md. It never holds secret
//! or config content, only content versions.

use serde::{Deserialize, Serialize};

use crate::desired::DesiredState;

pub const FORMAT: &str = "reconciler.state";
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    pub format: String,
    pub version: u32,
    #[serde(flatten)]
    pub state: DesiredState,
}

impl StateFile {
    pub fn new(state: DesiredState) -> Self {
        StateFile {
            format: FORMAT.into(),
            version: VERSION,
            state,
        }
    }
}

/// Parse an export, checking its format and version first so that an unrelated JSON file or a
/// newer format gets a clear message rather than a field-by-field complaint.
pub fn parse(text: &str, origin: &str) -> anyhow::Result<DesiredState> {
    #[derive(Deserialize)]
    struct Header {
        format: Option<String>,
        version: Option<u32>,
    }
    let header: Header = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{origin}:{}:{}: not a JSON state export: {e}",
            e.line(),
            e.column()
        )
    })?;
    if header.format.as_deref() != Some(FORMAT) {
        anyhow::bail!(
            "{origin}: not a reconciler state export (expected \"format\": \"{FORMAT}\")"
        );
    }
    match header.version {
        Some(VERSION) => {}
        Some(v) => anyhow::bail!("{origin}: state format version {v} is not supported (this reconciler reads version {VERSION})"),
        None => anyhow::bail!("{origin}: the state export has no \"version\""),
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let file: StateFile = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| anyhow::anyhow!("{origin}: {}: {}", e.path(), e.inner()))?;
    Ok(file.state)
}
