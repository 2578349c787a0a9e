//! `node ls | inspect | promote | demote | rm`: the cluster's nodes as the manager asked sees
//! them, and the changes of role and membership (made by the leader, whichever manager is
//! asked). A node is named by its ID, a unique ID prefix, or its hostname, as docker takes it.

use crate::cluster::lifecycle::{Action, NodeChange, NodeInspect, NodeUpdate};
use crate::cluster::rpc::{self, pb};
use crate::cluster::services::NodeList;

use super::control::{Control, NodeArgs};

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List the nodes: status, availability, and each manager's part in Raft.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show nodes in detail (JSON, or --pretty); without a name, the node of --data-dir.
    Inspect(InspectArgs),
    /// Make workers managers: each enters Raft once it has its manager certificate.
    Promote(ChangeArgs),
    /// Make managers workers: each leaves Raft first (at least one manager stays).
    Demote(ChangeArgs),
    /// Remove nodes from the cluster: down workers, or any worker with --force. Their
    /// certificates are refused from then on.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Change a node's availability (active, pause: no new tasks, drain: its tasks move),
    /// labels (placement constraints read them) or role.
    Update(UpdateArgs),
    /// The tasks on nodes (ID, ID prefix or hostname), as `service ps` shows them.
    Ps(super::cluster::ListOfArgs),
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// ID, ID prefix or hostname.
    #[arg(add = clap_complete::ArgValueCandidates::new(super::complete::nodes))]
    node_name: String,
    /// active, pause (no new tasks) or drain (its tasks move to other nodes).
    #[arg(long, value_parser = ["active", "pause", "drain"])]
    availability: Option<String>,
    /// Add or change a label (repeatable).
    #[arg(long = "label-add", value_name = "KEY=VALUE")]
    label_add: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long = "label-rm", value_name = "KEY")]
    label_rm: Vec<String>,
    /// worker or manager (as `node promote` / `node demote`).
    #[arg(long, value_parser = ["worker", "manager"])]
    role: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// ID, ID prefix or hostname; `self` for the node of --data-dir.
    #[arg(default_value = "self", add = clap_complete::ArgValueCandidates::new(super::complete::nodes))]
    nodes: Vec<String>,
    /// Human-readable text instead of JSON.
    #[arg(long)]
    pretty: bool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// ID, ID prefix or hostname.
    #[arg(required = true, add = clap_complete::ArgValueCandidates::new(super::complete::nodes))]
    nodes: Vec<String>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// ID, ID prefix or hostname.
    #[arg(required = true, add = clap_complete::ArgValueCandidates::new(super::complete::nodes))]
    nodes: Vec<String>,
    /// Remove a node that is not down.
    #[arg(short, long)]
    force: bool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print the IDs only.
    #[arg(short, long)]
    quiet: bool,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// A Go template per row as docker takes it (`'{{.Hostname}}\t{{.ManagerStatus}}'`,
    /// `table ...`, `json`); the fields are docker's: .ID .Self .Hostname .Status
    /// .Availability .ManagerStatus .EngineVersion.
    #[arg(long, conflicts_with_all = ["json", "quiet"])]
    format: Option<String>,
    /// Only nodes that match KEY=VALUE (repeatable), as docker's: id, name, role,
    /// node.label (KEY or KEY=VALUE), label (the engine's).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    #[command(flatten)]
    node: NodeArgs,
}

/// The fields `--format` has for a node, as docker names them.
const NODE_FIELDS: &[&str] = &[
    "ID",
    "Self",
    "Hostname",
    "Status",
    "Availability",
    "ManagerStatus",
    "EngineVersion",
];

pub fn run(cmd: NodeCommand) -> anyhow::Result<i32> {
    match cmd {
        NodeCommand::Ls(args) => ls(args),
        NodeCommand::Inspect(args) => inspect(args),
        NodeCommand::Promote(args) => change(&args.node, &args.nodes, Action::Promote),
        NodeCommand::Demote(args) => change(&args.node, &args.nodes, Action::Demote),
        NodeCommand::Rm(args) => change(
            &args.node,
            &args.nodes,
            Action::Remove { force: args.force },
        ),
        NodeCommand::Update(args) => update(args),
        NodeCommand::Ps(args) => super::cluster::node_ps(args),
    }
}

fn update(args: UpdateArgs) -> anyhow::Result<i32> {
    use crate::store::{Availability, NodeRole};
    let mut u = NodeUpdate {
        availability: args.availability.as_deref().map(|a| match a {
            "pause" => Availability::Pause,
            "drain" => Availability::Drain,
            _ => Availability::Active,
        }),
        label_rm: args.label_rm,
        role: args.role.as_deref().map(|r| match r {
            "manager" => NodeRole::Manager,
            _ => NodeRole::Worker,
        }),
        ..Default::default()
    };
    for l in &args.label_add {
        // As docker: `key=value`, or a bare `key` for an empty value.
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        anyhow::ensure!(!k.is_empty(), "--label-add {l:?}: the key is empty");
        u.label_add.insert(k.to_string(), v.to_string());
    }
    change(&args.node, &[args.node_name], Action::Update(u))
}

/// Each node in turn, as docker does: every one is tried, each failure said, and the exit
/// status is 1 if any failed.
fn change(args: &NodeArgs, nodes: &[String], action: Action) -> anyhow::Result<i32> {
    let mut control = Control::connect(args)?;
    let mut failed = false;
    for name in nodes {
        let change = NodeChange {
            node: name.clone(),
            action: action.clone(),
        };
        let body = rpc::json(&change).map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        match control.call(async |c| c.change_node(body).await) {
            Ok(answer) => println!("{}", serde_json::from_slice::<String>(&answer.json)?),
            Err(e) => {
                eprintln!("Error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

fn inspect(args: InspectArgs) -> anyhow::Result<i32> {
    let mut control = Control::connect(&args.node)?;
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.nodes {
        let name = if name == "self" {
            control.node_id.clone()
        } else {
            name.clone()
        };
        let body = rpc::json(&name).map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        match control.call(async |c| c.inspect_node(body).await) {
            Ok(answer) => found.push(serde_json::from_slice::<NodeInspect>(&answer.json)?),
            Err(e) => {
                eprintln!("Error: {e:#}");
                failed = true;
            }
        }
    }
    if args.pretty {
        for (i, n) in found.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", pretty(n));
        }
    } else {
        println!("{}", serde_json::to_string_pretty(&found)?);
    }
    Ok(i32::from(failed))
}

/// `node inspect --pretty`, laid out as docker's.
fn pretty(n: &NodeInspect) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "ID:\t\t\t{}", n.id);
    if !n.spec.labels.is_empty() {
        let _ = writeln!(out, "Labels:");
        for (k, v) in &n.spec.labels {
            let _ = writeln!(out, " - {k}={v}");
        }
    }
    let _ = writeln!(out, "Hostname:\t\t{}", n.description.hostname);
    let _ = writeln!(out, "Status:");
    let _ = writeln!(out, " State:\t\t\t{}", capital(&n.status.state));
    let _ = writeln!(out, " Availability:\t\t{}", capital(&n.spec.availability));
    let _ = writeln!(out, " Address:\t\t{}", n.status.addr);
    if let Some(m) = &n.manager_status {
        let _ = writeln!(out, "Manager Status:");
        let _ = writeln!(out, " Address:\t\t{}", m.addr);
        let _ = writeln!(out, " Raft Status:\t\t{}", capital(&m.reachability));
        let _ = writeln!(out, " Leader:\t\t{}", if m.leader { "Yes" } else { "No" });
    }
    let _ = writeln!(out, "Platform:");
    let _ = writeln!(out, " Operating System:\t{}", n.description.platform.os);
    let _ = writeln!(
        out,
        " Architecture:\t\t{}",
        n.description.platform.architecture
    );
    let _ = writeln!(out, "Resources:");
    let _ = writeln!(
        out,
        " CPUs:\t\t\t{}",
        n.description.resources.nano_cpus / 1_000_000_000
    );
    let _ = writeln!(
        out,
        " Memory:\t\t{:.4}GiB",
        n.description.resources.memory_bytes as f64 / f64::from(1u32 << 30)
    );
    let _ = writeln!(
        out,
        "Engine Version:\t\t{}",
        n.description.engine.engine_version
    );
    if !n.description.engine.labels.is_empty() {
        let _ = writeln!(out, "Engine Labels:");
        for (k, v) in &n.description.engine.labels {
            let _ = writeln!(out, " - {k}={v}");
        }
    }
    out
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn ls(args: LsArgs) -> anyhow::Result<i32> {
    let keep = super::filter::Filters::parse(&args.filter, &super::filter::NODE_KEYS)?;
    let mut control = Control::connect(&args.node)?;
    let answer = control.call(async |c| c.list_nodes(pb::Empty {}).await)?;
    let mut list: NodeList = serde_json::from_slice(&answer.json)?;
    list.nodes.retain(|n| keep.node(n));
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
    if let Some(format) = &args.format {
        let rows: Vec<super::format::Row> = list
            .nodes
            .iter()
            .map(|n| {
                vec![
                    ("ID", n.id.clone()),
                    ("Self", (n.id == list.answered_by).to_string()),
                    ("Hostname", n.hostname.clone()),
                    ("Status", n.status.clone()),
                    ("Availability", n.availability.clone()),
                    ("ManagerStatus", n.manager_status.clone()),
                    ("EngineVersion", n.engine_version.clone()),
                ]
            })
            .collect();
        let format = super::format::Format::parse(format, NODE_FIELDS)?;
        print!("{}", format.render(&rows)?);
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
