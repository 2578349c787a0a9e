//! `node ls` (and, as they come, inspect, promote, demote, rm): the cluster's nodes as the
//! manager asked sees them.

use crate::cluster::rpc::pb;
use crate::cluster::services::NodeList;

use super::control::{Control, NodeArgs};

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List the nodes: status, availability, and each manager's part in Raft.
    #[command(alias = "list")]
    Ls(LsArgs),
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print the IDs only.
    #[arg(short, long)]
    quiet: bool,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
}

pub fn run(cmd: NodeCommand) -> anyhow::Result<i32> {
    match cmd {
        NodeCommand::Ls(args) => ls(args),
    }
}

fn ls(args: LsArgs) -> anyhow::Result<i32> {
    let mut control = Control::connect(&args.node)?;
    let answer = control.call(async |c| c.list_nodes(pb::Empty {}).await)?;
    let mut list: NodeList = serde_json::from_slice(&answer.json)?;
    list.nodes
        .sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if args.quiet {
        for n in &list.nodes {
            println!("{}", n.id);
        }
        return Ok(0);
    }
    let mut table = super::cluster::table(&[
        "ID",
        "HOSTNAME",
        "STATUS",
        "AVAILABILITY",
        "MANAGER STATUS",
        "ENGINE VERSION",
    ]);
    for n in &list.nodes {
        let id = if n.id == list.answered_by {
            format!("{} *", n.id)
        } else {
            n.id.clone()
        };
        table.add_row([
            id,
            n.hostname.clone(),
            n.status.clone(),
            n.availability.clone(),
            n.manager_status.clone(),
            n.engine_version.clone(),
        ]);
    }
    println!("{table}");
    Ok(0)
}
