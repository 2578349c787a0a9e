//! `reconciler history [COMMIT]`: what the cluster did with each commit it saw (Argo CD's sync
//! history): a line per commit, newest first; or one commit's timeline, rollouts and plan.

use std::fmt::Write as _;
use std::time::Duration;

use super::client::{Client, ServerArgs};
use super::cluster::{ellipsis, table};
use super::filter::{Filters, HISTORY_KEYS};
use super::format::{Format, Row};
use crate::store::history::{short, CommitRecord, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// One commit (its id, or a prefix of 4 characters or more): its timeline, its services'
    /// rollouts and the plan it made against the commit before.
    #[arg(add = clap_complete::ArgValueCandidates::new(super::complete::commits))]
    commit: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only the commit ids, newest first, one a line.
    #[arg(short, long, conflicts_with_all = ["json", "commit"])]
    quiet: bool,
    /// Only the commits that match KEY=VALUE (repeatable): id, outcome (converged,
    /// rolled-back, paused, refused, superseded, rolling, observed), trigger, service.
    #[arg(
        short,
        long = "filter",
        value_name = "KEY=VALUE",
        conflicts_with = "commit"
    )]
    filter: Vec<String>,
    /// A Go template per row as docker takes it (`'{{.ID}}\t{{.Outcome}}'`, `table ...`,
    /// `json`); the fields: .ID .Received .Trigger .Outcome .Took .Changes .Summary .Detail.
    #[arg(long, conflicts_with_all = ["json", "quiet", "commit"])]
    format: Option<String>,
    /// Full commit ids and reasons, not cut to the column.
    #[arg(long)]
    no_trunc: bool,
}

/// The fields `--format` has for a commit.
const FIELDS: &[&str] = &[
    "ID", "Received", "Trigger", "Outcome", "Took", "Changes", "Summary", "Detail",
];

/// Reasons are cut to this many characters in the list unless `--no-trunc`.
const MAX_DETAIL_CHARS: usize = 60;

pub fn run(args: Args) -> anyhow::Result<i32> {
    let client = Client::new(&args.server)?;
    let now = crate::store::now_ms();
    if let Some(commit) = &args.commit {
        let record: CommitRecord = client.get(&format!("/api/v1/history/{commit}"))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&record)?);
        } else {
            print!("{}", detail(&record, now));
        }
        return Ok(0);
    }
    let keep = Filters::parse(&args.filter, &HISTORY_KEYS)?;
    let records: Vec<CommitRecord> = client.get("/api/v1/history")?;
    let records: Vec<CommitRecord> = records.into_iter().filter(|r| keep.commit(r)).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if args.quiet {
        for r in &records {
            println!("{}", r.commit);
        }
    } else if let Some(f) = &args.format {
        let rows: Vec<Row> = records.iter().map(|r| row(r, now, args.no_trunc)).collect();
        let format = Format::parse(f, FIELDS)?;
        print!("{}", format.render(&rows)?);
    } else if records.is_empty() && args.filter.is_empty() {
        println!("No commit seen yet.");
    } else {
        println!("{}", list(&records, now, args.no_trunc));
    }
    Ok(0)
}

/// A commit as the list and `--format` show it: ids and reasons cut unless `--no-trunc`, as
/// docker cuts them.
fn row(r: &CommitRecord, now: u64, no_trunc: bool) -> Row {
    let detail = why(r).unwrap_or_default();
    vec![
        (
            "ID",
            if no_trunc {
                r.commit.clone()
            } else {
                short(&r.commit).to_string()
            },
        ),
        ("Received", format!("{} ago", ago(now, r.received_at))),
        (
            "Trigger",
            r.trigger.map(|t| t.name()).unwrap_or("-").to_string(),
        ),
        ("Outcome", outcome(r)),
        ("Took", r.took().map(seconds).unwrap_or_else(|| "-".into())),
        ("Changes", changes(r)),
        ("Summary", r.summary.clone()),
        (
            "Detail",
            if no_trunc {
                detail
            } else {
                ellipsis(&detail, MAX_DETAIL_CHARS)
            },
        ),
    ]
}

/// A line per commit, newest first.
fn list(records: &[CommitRecord], now: u64, no_trunc: bool) -> comfy_table::Table {
    let mut t = table(&[
        "COMMIT", "RECEIVED", "TRIGGER", "OUTCOME", "TOOK", "CHANGES", "SUMMARY", "DETAIL",
    ]);
    for r in records {
        t.add_row(
            row(r, now, no_trunc)
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
        );
    }
    t
}

/// One commit: what it is, how it ended, its timeline, its rollouts and its plan.
fn detail(r: &CommitRecord, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Commit:     {}  {}", r.commit, r.summary);
    let trigger = r
        .trigger
        .map(|t| format!(" ({})", t.name()))
        .unwrap_or_default();
    let _ = writeln!(out, "Received:   {} ago{trigger}", ago(now, r.received_at));
    let _ = writeln!(out, "Outcome:    {}", outcome(r));
    if let Some(why) = why(r) {
        let _ = writeln!(out, "            {why}");
    }
    if let Some(took) = r.took() {
        let _ = writeln!(out, "Converged:  after {}", seconds(took));
    }
    for e in &r.errors {
        let _ = writeln!(out, "  {e}");
    }
    for (stack, why) in &r.blocked {
        let _ = writeln!(
            out,
            "Blocked:    stack {stack} (what runs of it stayed as it was)"
        );
        for e in why {
            let _ = writeln!(out, "  {e}");
        }
    }

    let _ = writeln!(out, "\nTimeline:");
    let mut t = table(&["AFTER", "EVENT", "SERVICE", "DETAIL"]);
    for e in &r.events {
        t.add_row(vec![
            format!("+{}", seconds(e.at.saturating_sub(r.received_at))),
            e.kind.name().to_string(),
            e.service.clone().unwrap_or_default(),
            e.message.clone(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    if r.events_dropped > 0 {
        let _ = writeln!(out, "  ({} more events not kept)", r.events_dropped);
    }

    if !r.rollouts.is_empty() {
        let _ = writeln!(out, "\nRollouts:");
        let mut t = table(&["SERVICE", "STATE", "REPLACED", "TOOK", "DETAIL"]);
        for (service, ro) in &r.rollouts {
            t.add_row(vec![
                service.clone(),
                ro.state.name().to_string(),
                ro.replaced.to_string(),
                ro.ended_at
                    .map(|e| seconds(e.saturating_sub(ro.started_at)))
                    .unwrap_or_else(|| "-".into()),
                ro.message.clone(),
            ]);
        }
        let _ = writeln!(out, "{t}");
    }

    if let Some(plan) = &r.plan {
        let _ = writeln!(out, "\nPlan:");
        out.push_str(&crate::plan::render::text(plan));
    }
    out
}

/// The outcome in words; a commit still converging says so.
fn outcome(r: &CommitRecord) -> String {
    match (r.outcome, r.converged_at) {
        (Outcome::RolledBack, Some(_)) => "rolled back (converged on the previous spec)".into(),
        (Outcome::RolledBack, None) => "rolled back (rolling back)".into(),
        (o, _) => o.name().into(),
    }
}

/// Why it did not succeed, in a line: the first error, the pause or rollback reason, or what
/// superseded it.
fn why(r: &CommitRecord) -> Option<String> {
    match r.outcome {
        Outcome::Refused => r.errors.first().cloned(),
        Outcome::RolledBack | Outcome::Paused => r
            .rollouts
            .iter()
            .find(|(_, ro)| !ro.message.is_empty())
            .map(|(s, ro)| format!("{s}: {}", ro.message))
            .or_else(|| {
                r.events
                    .iter()
                    .rev()
                    .find(|e| !e.message.is_empty() && e.service.is_some())
                    .map(|e| format!("{}: {}", e.service.as_deref().unwrap_or(""), e.message))
            }),
        Outcome::Superseded => r
            .superseded_by
            .as_deref()
            .map(|c| format!("by {}", short(c))),
        Outcome::Observed => Some("the cluster only observes (--observe-only)".into()),
        Outcome::Rolling | Outcome::Converged => None,
    }
}

fn changes(r: &CommitRecord) -> String {
    match &r.plan {
        None => "-".into(),
        Some(p) if p.is_empty() => "none".into(),
        Some(p) => {
            let (c, u, d) = p.counts();
            let parts: Vec<String> = [(c, "created"), (u, "updated"), (d, "removed")]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, w)| format!("{n} {w}"))
                .collect();
            parts.join(", ")
        }
    }
}

fn ago(now: u64, at: u64) -> String {
    humantime::format_duration(Duration::from_secs(now.saturating_sub(at) / 1000)).to_string()
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::{History, Received};
    use crate::store::{UpdateState, UpdateStatus};

    /// A commit whose update failed and rolled back, as the store records it.
    fn rolled_back() -> CommitRecord {
        let mut h = History::default();
        h.applied(
            Received {
                commit: "a1b2c3d4e5f6".into(),
                summary: "web to 1.2".into(),
                trigger: Some(crate::gitops::Trigger::Webhook),
                at: 1_000,
            },
            crate::plan::Plan::default(),
            Default::default(),
        );
        let status = |state, at: u64, message: &str| UpdateStatus {
            state,
            started_at: at,
            completed_at: (state != UpdateState::Updating && state != UpdateState::RollbackStarted)
                .then_some(at),
            message: message.into(),
        };
        let rev = Some("a1b2c3d4e5f6");
        h.update_status(
            "shop_web",
            rev,
            None,
            Some(&status(UpdateState::Updating, 1_100, "update in progress")),
        );
        h.task_started("shop_web", rev);
        h.update_status(
            "shop_web",
            rev,
            Some(UpdateState::Updating),
            Some(&status(
                UpdateState::RollbackStarted,
                4_000,
                "rollback started: task 7fcaf78bf718 failed: task: non-zero exit (1)",
            )),
        );
        h.update_status(
            "shop_web",
            rev,
            Some(UpdateState::RollbackStarted),
            Some(&status(
                UpdateState::RollbackCompleted,
                7_500,
                "rollback completed",
            )),
        );
        h.converged("a1b2c3d4e5f6", 8_000);
        let record = h.records().next().unwrap().clone();
        record
    }

    #[test]
    fn one_commit_shows_its_outcome_reason_timeline_and_rollouts() {
        let text = detail(&rolled_back(), 61_000);
        assert!(
            text.contains("Outcome:    rolled back (converged on the previous spec)"),
            "{text}"
        );
        assert!(
            text.contains("shop_web: rollback started: task 7fcaf78bf718 failed"),
            "{text}"
        );
        assert!(text.contains("Received:   1m ago (webhook)"), "{text}");
        // Event times are relative to when the commit came in.
        let rollback = text
            .lines()
            .find(|l| l.contains("rollback started") && l.contains("+3.0s"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(rollback.contains("shop_web"), "{rollback}");
        assert!(text.contains("rolled back"), "{text}");
        assert!(text.contains("No changes"), "{text}");
    }

    #[test]
    fn the_list_never_calls_a_rollback_converged() {
        let r = rolled_back();
        assert!(!r.outcome.is_success());
        let table = list(&[r], 61_000, false).to_string();
        assert!(table.contains("rolled back"), "{table}");
        assert!(
            table.contains("7.0s"),
            "took, from received to converged: {table}"
        );
        assert!(table.contains("webhook"), "{table}");
    }
}
