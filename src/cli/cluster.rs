//! Commands against a running `reconciler up`: status, sync, service ..., stack ...

use std::time::{Duration, Instant};

use clap_complete::ArgValueCandidates;
use comfy_table::{presets::NOTHING, Table};

use super::client::{Client, ServerArgs};
use super::filter::{self, Filters};
use crate::api::views::{ServiceView, StackView, StatusView, TaskView};
use crate::store::{Service, UpdateState};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Wait until the commit has converged (or failed), showing progress.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// List services.
    Ls(ListArgs),
    /// List a service's tasks.
    Ps(ListOfArgs),
    /// Show a service's spec, previous spec and update status.
    Inspect(NameArgs),
    /// Print the logs of a service's tasks.
    Logs(LogsArgs),
    /// Swap the service back to its previous spec (drift from git until the next commit changes it).
    Rollback(NameArgs),
    /// Not here: scale by commit. Says how, changes nothing, exits 1.
    Scale {
        #[arg(value_name = "SERVICE=REPLICAS")]
        targets: Vec<String>,
    },
    /// Not here: update by commit. Says how for each docker flag, changes nothing, exits 1.
    Update(DockerArgs),
    /// Not here: add the service to a stack file. Changes nothing, exits 1.
    Create(DockerArgs),
    /// Not here: remove the service from its stack file. Changes nothing, exits 1.
    Rm { services: Vec<String> },
}

/// A docker command's arguments, taken as typed, flags included.
#[derive(Debug, clap::Args)]
pub struct DockerArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum StackCommand {
    /// List stacks.
    Ls(ListArgs),
    /// List a stack's services.
    Services(ListOfArgs),
    /// List a stack's tasks.
    Ps(ListOfArgs),
    /// Not here: commit the stack's directory. Changes nothing, exits 1.
    Deploy(DockerArgs),
    /// Not here: remove the stack's directory from git. Changes nothing, exits 1.
    Rm { stacks: Vec<String> },
}

/// Say the GitOps way on stderr; nothing was done.
fn not_here(text: String) -> anyhow::Result<i32> {
    eprintln!("{text}");
    Ok(1)
}

/// The last argument that is not a flag: the name in `docker stack deploy -c f.yml NAME`.
fn last_name(args: &[String]) -> Option<&str> {
    args.iter()
        .rev()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str)
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long)]
    json: bool,
    /// Only names (services, stacks) or IDs (tasks), one a line, as docker's `-q`.
    #[arg(short, long, conflicts_with = "json")]
    quiet: bool,
    /// Only what matches KEY=VALUE (repeatable), as docker's `--filter`.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// A Go template per row as docker takes it (`'{{.Name}}\t{{.Image}}'`, `table ...`,
    /// `json`); the fields are docker's (services: .Name .Mode .Replicas .Image .Ports
    /// .UpdateState; stacks: .Name .Services .Networks .Secrets .Configs).
    #[arg(long, conflicts_with_all = ["json", "quiet"])]
    format: Option<String>,
}

/// A listing of services' or one stack's objects.
#[derive(Debug, clap::Args)]
pub struct ListOfArgs {
    /// The services (`service ps` takes several, as docker's), the nodes (`node ps`), or
    /// the stack.
    #[arg(required = true, num_args = 1.., add = ArgValueCandidates::new(super::complete::names))]
    names: Vec<String>,
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long)]
    json: bool,
    /// Only names (services) or IDs (tasks), one a line, as docker's `-q`.
    #[arg(short, long, conflicts_with = "json")]
    quiet: bool,
    /// Whole task IDs and errors (by default cut as docker cuts them: IDs to 12 characters,
    /// errors to 30).
    #[arg(long)]
    no_trunc: bool,
    /// Only what matches KEY=VALUE (repeatable), as docker's `--filter`.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// A Go template per row as docker takes it (`'{{.Name}}\t{{.CurrentState}}'`, `table
    /// ...`, `json`); the fields are docker's (tasks: .ID .Name .Image .Node .DesiredState
    /// .CurrentState .Error; services: .Name .Mode .Replicas .Image .Ports .UpdateState).
    #[arg(long, conflicts_with_all = ["json", "quiet"])]
    format: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    #[arg(add = ArgValueCandidates::new(super::complete::services))]
    name: String,
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[arg(add = ArgValueCandidates::new(super::complete::services))]
    name: String,
    #[command(flatten)]
    server: ServerArgs,
    /// Lines from the end of each task's log, or `all`.
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Keep following the tasks' output.
    #[arg(short, long)]
    follow: bool,
    /// Only lines since a time: RFC 3339 (`2026-12-03T10:00:00Z`) or relative (`42m`).
    #[arg(long)]
    since: Option<String>,
    /// Show each line's timestamp.
    #[arg(short, long)]
    timestamps: bool,
}

/// `--since` as the engine takes it: seconds since the epoch.
fn since_epoch(text: &str, now: std::time::SystemTime) -> anyhow::Result<i32> {
    let at = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            anyhow::anyhow!(
                "--since {text:?}: neither a time (2026-12-03T10:00:00Z) nor a duration (42m)"
            )
        })?,
    };
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Ok(i32::try_from(secs).unwrap_or(i32::MAX))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::spec::units::Duration::parse(s).map(|d| d.as_std())
}

/// A table without borders, as docker's. On a terminal its cells wrap to fit the width;
/// into a pipe or a file nothing is cut, so that scripts see everything.
pub(super) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// The fields `--format` has for a task, as docker names them.
const TASK_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Image",
    "Node",
    "DesiredState",
    "CurrentState",
    "Error",
];

/// The fields `--format` has for a service, as docker names them (and its update's state).
const SERVICE_FIELDS: &[&str] = &["Name", "Mode", "Replicas", "Image", "Ports", "UpdateState"];

fn task_row(task: &TaskView, no_trunc: bool, now: u64) -> super::format::Row {
    let ago =
        humantime::format_duration(Duration::from_secs(now.saturating_sub(task.since) / 1000));
    vec![
        (
            "ID",
            if no_trunc {
                task.id.clone()
            } else {
                short_id(task).to_string()
            },
        ),
        ("Name", task.name.clone()),
        ("Image", task.image.clone()),
        (
            "Node",
            if task.node_hostname.is_empty() {
                task.node.clone()
            } else {
                task.node_hostname.clone()
            },
        ),
        ("DesiredState", task.desired_state.name().to_string()),
        ("CurrentState", format!("{} {ago} ago", task.state.name())),
        (
            "Error",
            match (&task.error, no_trunc) {
                (Some(e), true) => e.clone(),
                (Some(e), false) => ellipsis(e, MAX_ERROR_CHARS),
                (None, _) => String::new(),
            },
        ),
    ]
}

fn service_row(s: &ServiceView) -> super::format::Row {
    vec![
        ("Name", s.name.clone()),
        ("Mode", s.mode.clone()),
        ("Replicas", replicas(s)),
        ("Image", s.image.clone()),
        ("Ports", s.ports.join(", ")),
        ("UpdateState", update(s)),
    ]
}

/// Rows through `--format`.
fn formatted(
    format: &str,
    fields: &[&'static str],
    rows: &[super::format::Row],
) -> anyhow::Result<i32> {
    let format = super::format::Format::parse(format, fields)?;
    print!("{}", format.render(rows)?);
    Ok(0)
}

/// `node ps NODE...`: the tasks on the nodes, each named as docker takes it (ID, ID prefix or
/// hostname).
pub fn node_ps(a: ListOfArgs) -> anyhow::Result<i32> {
    let keep = Filters::parse(&a.filter, &filter::TASK_KEYS)?;
    let all: Vec<TaskView> = Client::new(&a.server)?.get("/api/v1/tasks")?;
    let mut v: Vec<TaskView> = Vec::new();
    for name in &a.names {
        let on = |t: &TaskView| {
            !t.node.is_empty()
                && (t.node == *name
                    || t.node.starts_with(name.as_str())
                    || t.node_hostname == *name)
        };
        let mine: Vec<&TaskView> = all.iter().filter(|t| on(t)).collect();
        let nodes: std::collections::BTreeSet<&str> =
            mine.iter().map(|t| t.node.as_str()).collect();
        anyhow::ensure!(
            nodes.len() <= 1,
            "node {name} is ambiguous ({} nodes match)",
            nodes.len()
        );
        v.extend(mine.into_iter().filter(|t| keep.task(t)).cloned());
    }
    show_tasks(&v, &a)
}

impl ListOfArgs {
    /// The one stack a stack listing takes.
    fn one(&self, command: &str) -> anyhow::Result<&str> {
        match self.names.as_slice() {
            [one] => Ok(one),
            _ => anyhow::bail!("{command} takes one stack, not {}", self.names.len()),
        }
    }
}

/// A task listing as its flags ask: JSON, IDs only, `--format`, or a table.
fn show_tasks(v: &[TaskView], a: &ListOfArgs) -> anyhow::Result<i32> {
    if a.json {
        return json(&v);
    }
    if let Some(f) = &a.format {
        let now = crate::manager::now_ms();
        let rows: Vec<_> = v.iter().map(|t| task_row(t, a.no_trunc, now)).collect();
        return formatted(f, TASK_FIELDS, &rows);
    }
    if a.quiet {
        return lines(v.iter().map(|t| {
            if a.no_trunc {
                t.id.as_str()
            } else {
                short_id(t)
            }
        }));
    }
    println!("{}", tasks_table(v, a.no_trunc));
    Ok(0)
}

/// A service listing as its flags ask: JSON, names only, or a table.
fn show_services(
    v: &[ServiceView],
    as_json: bool,
    quiet: bool,
    format: Option<&str>,
) -> anyhow::Result<i32> {
    if as_json {
        return json(&v);
    }
    if let Some(f) = format {
        let rows: Vec<_> = v.iter().map(service_row).collect();
        return formatted(f, SERVICE_FIELDS, &rows);
    }
    if quiet {
        return lines(v.iter().map(|s| s.name.as_str()));
    }
    println!("{}", services_table(v));
    Ok(0)
}

/// One item a line, for scripts (`-q`).
fn lines<'a>(items: impl Iterator<Item = &'a str>) -> anyhow::Result<i32> {
    for item in items {
        println!("{item}");
    }
    Ok(0)
}

/// A task's ID as the tables show it by default.
fn short_id(t: &TaskView) -> &str {
    &t.id[..12.min(t.id.len())]
}

/// Errors are cut to this many characters in task tables, as `docker service ps` cuts them.
const MAX_ERROR_CHARS: usize = 30;

/// `text` cut to `max` characters, the last of them an ellipsis when anything was cut.
pub(super) fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<i32> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(0)
}

fn replicas(s: &ServiceView) -> String {
    // Jobs as docker shows them: "1/1 (2/3 completed)".
    if let Some(done) = s.completed {
        let of = s.desired.or(s.eligible_nodes).unwrap_or(done);
        let at_once = s.max_concurrent.or(s.eligible_nodes).unwrap_or(of);
        return format!("{}/{at_once} ({done}/{of} completed)", s.running);
    }
    match s.desired {
        Some(d) => format!("{}/{d}", s.running),
        None => format!(
            "{}/{} (global)",
            s.running,
            s.eligible_nodes.unwrap_or(s.running)
        ),
    }
}

fn update(s: &ServiceView) -> String {
    let state = s.update_state.map_or("", UpdateState::name);
    let mut text = match s.update_state {
        Some(
            UpdateState::Paused | UpdateState::RollbackPaused | UpdateState::RollbackCompleted,
        ) => {
            format!("{state}: {}", s.update_message)
        }
        _ => state.to_string(),
    };
    if s.drift {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str("rolled back by hand (drift from git)");
    }
    text
}

fn services_table(services: &[ServiceView]) -> Table {
    let mut t = table(&["NAME", "MODE", "REPLICAS", "IMAGE", "PORTS", "UPDATE STATE"]);
    for s in services {
        t.add_row(
            service_row(s)
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
        );
    }
    t
}

fn tasks_table(tasks: &[TaskView], no_trunc: bool) -> Table {
    let mut t = table(&[
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
    ]);
    let now = crate::manager::now_ms();
    for task in tasks {
        t.add_row(
            task_row(task, no_trunc, now)
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
        );
    }
    t
}

pub fn status(args: StatusArgs) -> anyhow::Result<i32> {
    let c = Client::new(&args.server)?;
    let v: StatusView = c.get("/api/v1/status")?;
    if args.json {
        return json(&v);
    }
    let short = |c: &str| c[..7.min(c.len())].to_string();
    match &v.revision.applied {
        Some(a) => println!("Live commit:    {}", short(&a.commit)),
        None => println!("Live commit:    none yet"),
    }
    if let Some(r) = &v.revision.refused {
        let newer = v.revision.applied.as_ref().is_none_or(|a| r.at > a.at);
        if newer {
            println!(
                "Refused commit: {} ({} {}; the live commit keeps running)",
                short(&r.commit),
                r.errors.len(),
                super::validate::plural(r.errors.len(), "error")
            );
            for e in r.errors.iter().take(10) {
                println!("  {e}");
            }
        }
    }
    if let Some(blocked) = v.revision.applied.as_ref().map(|a| &a.blocked) {
        for (stack, why) in blocked {
            println!("Blocked stack:  {stack} (what runs of it stays as it was)");
            for e in why.iter().take(5) {
                println!("  {e}");
            }
        }
    }
    let git_error = v.git.get("last_error").and_then(|e| e.as_str());
    match git_error {
        Some(e) => {
            let failures = v.git.get("failures").and_then(|f| f.as_u64()).unwrap_or(1);
            let fetches = if failures == 1 { "fetch" } else { "fetches" };
            println!("Git:            failing ({failures} {fetches} in a row, retrying): {e}");
        }
        None => println!("Git:            ok"),
    }
    if v.node.observe_only {
        println!("Mode:           observe only: commits are planned, none is applied (`reconciler history COMMIT` shows what one would do)");
    }
    println!("Nodes:          {}", v.nodes);
    match &v.node.engine_error {
        Some(e) => println!("Docker Engine:  unreachable: {e}"),
        None => println!("Docker Engine:  ok"),
    }
    if let Some(e) = &v.node.cluster_error {
        println!("Cluster:        writes do not commit: {e}");
    }
    for (name, t) in &v.node.notifications {
        let state = match &t.last_error {
            Some(e) => format!("failing ({} waiting, retrying): {e}", t.pending),
            None if t.pending > 0 => format!("{} waiting", t.pending),
            None => "ok".to_string(),
        };
        let lost = if t.lost > 0 {
            format!("; {} lost off the log", t.lost)
        } else {
            String::new()
        };
        println!(
            "Notify {name} ({}): {state}; {} delivered{lost}",
            t.kind, t.delivered
        );
    }
    for (port, e) in &v.node.port_failures {
        println!("Port {port}:      cannot be published: {e}");
    }
    for (name, panic) in &v.node.loop_failures {
        println!("Loop {name}:  panicked and was restarted: {panic}");
    }
    for (node, names) in &v.node.stale_containers {
        let node_shown = if node.is_empty() {
            "(no node label)"
        } else {
            node.as_str()
        };
        println!(
            "Stale:          {} {} of node {node_shown}, which is not in this cluster, still there; remove with:\n                  docker rm -f $(docker ps -aq --filter label=org.reconciler.node={node})",
            names.len(),
            super::validate::plural(names.len(), "container")
        );
    }
    println!("Ingress:        {}", v.node.ingress_backend);
    println!(
        "State:          {}",
        match (v.converged, git_error.is_some()) {
            (true, false) => "converged",
            (true, true) => "converged on the last commit fetched (git is failing)",
            (false, _) => "converging",
        }
    );
    println!();
    println!("{}", services_table(&v.services));
    // What stands between a service and its desired state, in a line each.
    let problems: Vec<&ServiceView> = v
        .services
        .iter()
        .filter(|s| s.last_error.is_some())
        .collect();
    if !problems.is_empty() {
        println!();
        for s in problems {
            println!(
                "{}: {}",
                s.name,
                s.last_error.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(0)
}

pub fn service(cmd: ServiceCommand) -> anyhow::Result<i32> {
    match cmd {
        ServiceCommand::Ls(a) => {
            let keep = Filters::parse(&a.filter, &filter::SERVICE_KEYS)?;
            let v: Vec<ServiceView> = Client::new(&a.server)?.get("/api/v1/services")?;
            let v: Vec<ServiceView> = v.into_iter().filter(|s| keep.service(s)).collect();
            return show_services(&v, a.json, a.quiet, a.format.as_deref());
        }
        ServiceCommand::Ps(a) => {
            let keep = Filters::parse(&a.filter, &filter::TASK_KEYS)?;
            let client = Client::new(&a.server)?;
            let mut v: Vec<TaskView> = Vec::new();
            for name in &a.names {
                let tasks: Vec<TaskView> = client.get(&format!("/api/v1/services/{name}/tasks"))?;
                v.extend(tasks.into_iter().filter(|t| keep.task(t)));
            }
            return show_tasks(&v, &a);
        }
        ServiceCommand::Inspect(a) => {
            let v: Service =
                Client::new(&a.server)?.get(&format!("/api/v1/services/{}", a.name))?;
            return json(&v);
        }
        ServiceCommand::Logs(a) => return logs(a),
        ServiceCommand::Scale { targets } => return not_here(super::gitops_way::scale(&targets)),
        ServiceCommand::Update(DockerArgs { args }) => {
            return not_here(super::gitops_way::update(&args))
        }
        ServiceCommand::Create(DockerArgs { args }) => {
            return not_here(super::gitops_way::lifecycle(
                "service create",
                last_name(&args),
            ))
        }
        ServiceCommand::Rm { services } => {
            return not_here(super::gitops_way::removals("service rm", &services))
        }
        ServiceCommand::Rollback(a) => {
            let v: serde_json::Value =
                Client::new(&a.server)?.post(&format!("/api/v1/services/{}/rollback", a.name))?;
            if a.json {
                return json(&v);
            }
            println!("{}: rolled back to its previous spec (drift from git until the next commit that changes it)", a.name);
        }
    }
    Ok(0)
}

/// Logs come straight from the local Docker Engine, by the task containers' labels. Each line
/// is prefixed as docker prefixes it (`web_web.1.<task id>@<node> | `); with `--timestamps`
/// the engine's time comes first. With `--follow`, the tasks' streams are merged as lines come.
fn logs(a: LogsArgs) -> anyhow::Result<i32> {
    let tail = match a.tail.as_str() {
        "all" => "all".to_string(),
        n => n
            .parse::<u64>()
            .map_err(|_| anyhow::anyhow!("--tail {n:?}: a number of lines, or all"))?
            .to_string(),
    };
    let since = a
        .since
        .as_deref()
        .map(|s| since_epoch(s, std::time::SystemTime::now()))
        .transpose()?;
    let tasks: Vec<TaskView> =
        Client::new(&a.server)?.get(&format!("/api/v1/services/{}/tasks", a.name))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use futures::StreamExt;
        let docker = bollard::Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        let mut streams = Vec::new();
        for t in tasks.iter().filter(|t| t.container_id.is_some()) {
            let id = t.container_id.clone().unwrap_or_default();
            let mut opts = bollard::query_parameters::LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .follow(a.follow)
                .timestamps(a.timestamps)
                .tail(&tail);
            if let Some(since) = since {
                opts = opts.since(since);
            }
            let prefix = format!("{}.{}@{}", t.name, &t.id[..12.min(t.id.len())], t.node);
            let stream = docker
                .logs(&id, Some(opts.build()))
                .filter_map(|chunk| async move { chunk.ok() })
                .map(move |chunk| (prefix.clone(), chunk.to_string()));
            streams.push(stream.boxed());
        }
        // One task after the other, or all at once as their lines come when following.
        let mut all: futures::stream::BoxStream<'_, (String, String)> = if a.follow {
            futures::stream::select_all(streams).boxed()
        } else {
            futures::stream::iter(streams).flatten().boxed()
        };
        while let Some((prefix, text)) = all.next().await {
            for line in text.lines() {
                match line.split_once(' ').filter(|_| a.timestamps) {
                    Some((time, rest)) => println!("{time} {prefix}    | {rest}"),
                    None => println!("{prefix}    | {line}"),
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(0)
}

pub fn stack(cmd: StackCommand) -> anyhow::Result<i32> {
    match cmd {
        StackCommand::Ls(a) => {
            let keep = Filters::parse(&a.filter, &["name"])?;
            let v: Vec<StackView> = Client::new(&a.server)?.get("/api/v1/stacks")?;
            let v: Vec<StackView> = v.into_iter().filter(|st| keep.stack(&st.name)).collect();
            if a.json {
                return json(&v);
            }
            if let Some(f) = &a.format {
                let rows: Vec<super::format::Row> = v
                    .iter()
                    .map(|s| {
                        vec![
                            ("Name", s.name.clone()),
                            ("Services", s.services.to_string()),
                            ("Networks", s.networks.to_string()),
                            ("Secrets", s.secrets.to_string()),
                            ("Configs", s.configs.to_string()),
                        ]
                    })
                    .collect();
                return formatted(
                    f,
                    &["Name", "Services", "Networks", "Secrets", "Configs"],
                    &rows,
                );
            }
            if a.quiet {
                return lines(v.iter().map(|s| s.name.as_str()));
            }
            let mut t = table(&["NAME", "SERVICES", "NETWORKS", "SECRETS", "CONFIGS"]);
            for s in &v {
                t.add_row(vec![
                    s.name.clone(),
                    s.services.to_string(),
                    s.networks.to_string(),
                    s.secrets.to_string(),
                    s.configs.to_string(),
                ]);
            }
            println!("{t}");
        }
        StackCommand::Services(a) => {
            let stack = a.one("stack services")?;
            let v: Vec<ServiceView> = Client::new(&a.server)?.get("/api/v1/services")?;
            let keep = Filters::parse(&a.filter, &filter::SERVICE_KEYS)?;
            let v: Vec<ServiceView> = v
                .into_iter()
                .filter(|s| s.stack == stack && keep.service(s))
                .collect();
            return show_services(&v, a.json, a.quiet, a.format.as_deref());
        }
        StackCommand::Ps(a) => {
            let keep = Filters::parse(&a.filter, &filter::TASK_KEYS)?;
            let v: Vec<TaskView> = Client::new(&a.server)?.get("/api/v1/tasks")?;
            let prefix = format!("{}_", a.one("stack ps")?);
            let v: Vec<TaskView> = v
                .into_iter()
                .filter(|t| t.service.starts_with(&prefix) && keep.task(t))
                .collect();
            return show_tasks(&v, &a);
        }
        StackCommand::Deploy(DockerArgs { args }) => {
            return not_here(super::gitops_way::lifecycle(
                "stack deploy",
                last_name(&args),
            ))
        }
        StackCommand::Rm { stacks } => {
            return not_here(super::gitops_way::removals("stack rm", &stacks))
        }
    }
    Ok(0)
}

/// Fetch now; with --wait, follow the commit until it converges or fails, like
/// `docker service update`'s "overall progress ... verify: Service converged".
pub fn sync(args: SyncArgs) -> anyhow::Result<i32> {
    let c = Client::new(&args.server)?;
    let commit: crate::gitops::Commit = c.post("/api/v1/sync")?;
    println!(
        "{} {} ({})",
        commit.short_id(),
        commit.summary,
        commit.branch
    );
    if !args.wait {
        return Ok(0);
    }
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let v: StatusView = c.get("/api/v1/status")?;
        if let Some(r) = v
            .revision
            .refused
            .as_ref()
            .filter(|r| r.commit == commit.id)
        {
            eprintln!(
                "commit {} was refused; the previous commit keeps running:",
                commit.short_id()
            );
            for e in &r.errors {
                eprintln!("  {e}");
            }
            return Ok(1);
        }
        let applied = v
            .revision
            .applied
            .as_ref()
            .is_some_and(|a| a.commit == commit.id);
        let total: u64 = v
            .services
            .iter()
            .map(|s| s.desired.unwrap_or(s.running))
            .sum();
        let done: u64 = v
            .services
            .iter()
            .map(|s| s.up_to_date.min(s.desired.unwrap_or(u64::MAX)))
            .sum();
        let line = format!("overall progress: {done} out of {total} tasks");
        if applied && line != last {
            println!("{line}");
            last = line;
        }
        let failed: Vec<&ServiceView> = v
            .services
            .iter()
            .filter(|s| s.revision.as_deref() == Some(commit.id.as_str()) || applied)
            .filter(|s| {
                matches!(
                    s.update_state,
                    Some(
                        UpdateState::Paused
                            | UpdateState::RollbackPaused
                            | UpdateState::RollbackCompleted
                            | UpdateState::RollbackStarted
                    )
                )
            })
            .collect();
        if applied && !failed.is_empty() {
            for s in failed {
                eprintln!("{}: {}", s.name, update(s));
            }
            eprintln!("verify: commit {} did not converge", commit.short_id());
            return Ok(1);
        }
        if applied && v.converged {
            println!("verify: Service converged");
            return Ok(0);
        }
        if start.elapsed() > args.timeout {
            eprintln!(
                "verify: not converged after {}",
                humantime::format_duration(args.timeout)
            );
            for s in v
                .services
                .iter()
                .filter(|s| s.desired.is_some_and(|d| s.up_to_date < d))
            {
                eprintln!(
                    "  {}: {} ({})",
                    s.name,
                    replicas(s),
                    s.last_error.as_deref().unwrap_or("waiting")
                );
            }
            return Ok(1);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::ellipsis;

    #[test]
    fn ellipsis_cuts_by_characters_not_bytes() {
        assert_eq!(ellipsis("short", 30), "short");
        assert_eq!(ellipsis("exactly ten", 11), "exactly ten");
        assert_eq!(ellipsis("exactly ten!", 11), "exactly te…");
        assert_eq!(ellipsis("ééééé", 3), "éé…");
    }
}
