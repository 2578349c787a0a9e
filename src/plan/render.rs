//! The plan as text, grouped by stack, in the spirit of `terraform plan`:
//! `+` create, `~` update, `-` remove, with field-level changes and how each update rolls.

use std::fmt::Write as _;

use super::{Action, Change, FieldChange, Kind, Plan, Rollout};
use crate::spec::model::{FailureAction, UpdateOrder};

pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let short = |r: &Option<String>| r.as_deref().map(|r| r.chars().take(7).collect::<String>());
    match (short(&plan.from_revision), short(&plan.to_revision)) {
        (Some(a), Some(b)) => {
            let _ = writeln!(out, "Comparing {a} (observed) with {b} (desired).");
        }
        (None, Some(b)) => {
            let _ = writeln!(out, "Comparing the observed state with {b} (desired).");
        }
        (Some(a), None) => {
            let _ = writeln!(
                out,
                "Comparing {a} (observed) with the work tree (desired)."
            );
        }
        (None, None) => {}
    }
    if plan.is_empty() {
        out.push_str("No changes: the cluster already matches the desired state.\n");
        return out;
    }
    for stack in &plan.stacks {
        let _ = writeln!(out, "\n{} stack {}", marker(stack.action), stack.name);
        for change in &stack.changes {
            change_text(change, &mut out);
        }
    }
    let (c, u, r) = plan.counts();
    let _ = writeln!(out, "\nPlan: {c} to create, {u} to update, {r} to remove.");
    out
}

fn marker(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Remove => "-",
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Network => "network",
        Kind::Volume => "volume",
        Kind::Secret => "secret",
        Kind::Config => "config",
        Kind::Service => "service",
    }
}

fn change_text(c: &Change, out: &mut String) {
    let _ = writeln!(out, "  {} {} {}", marker(c.action), kind(c.kind), c.name);
    let width = c.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    for f in &c.fields {
        field_text(f, width, c.action, out);
    }
    if let Some(r) = &c.rollout {
        if let Some(line) = rollout_text(r) {
            let _ = writeln!(out, "      {line}");
        }
    }
}

fn field_text(f: &FieldChange, width: usize, action: Action, out: &mut String) {
    let name = &f.field;
    match (&f.from, &f.to) {
        (Some(a), Some(b)) => {
            let _ = writeln!(out, "      {name:width$}  {a} -> {b}");
        }
        (None, Some(b)) if action == Action::Create => {
            let _ = writeln!(out, "      {name:width$}  {b}");
        }
        (None, Some(b)) if b == "content changed" && name == "content" => {
            let _ = writeln!(out, "      content changed");
        }
        (None, Some(b)) if b == "content changed" => {
            let _ = writeln!(out, "      {name:width$}  content changed");
        }
        (None, Some(b)) => {
            let _ = writeln!(out, "      {name:width$}  (none) -> {b}");
        }
        (Some(a), None) => {
            let _ = writeln!(out, "      {name:width$}  {a} -> (none)");
        }
        (None, None) => {
            for r in &f.removed {
                let _ = writeln!(out, "      {name:width$}  - {r}");
            }
            for a in &f.added {
                let _ = writeln!(out, "      {name:width$}  + {a}");
            }
        }
    }
}

fn tasks(n: Option<u64>) -> String {
    match n {
        Some(1) => "1 task".into(),
        Some(n) => format!("{n} tasks"),
        None => "one task per node".into(),
    }
}

pub fn rollout_text(r: &Rollout) -> Option<String> {
    Some(match r {
        Rollout::Start { tasks: n } => format!("start {}", tasks(*n)),
        Rollout::Stop { tasks: n } => format!("stop {}", tasks(*n)),
        Rollout::Scale { from, to } if to > from => {
            format!(
                "scale {from} -> {to}: start {} (no task replaced)",
                tasks(Some(to - from))
            )
        }
        Rollout::Scale { from, to } => {
            format!(
                "scale {from} -> {to}: stop {} (no task replaced)",
                tasks(Some(from - to))
            )
        }
        Rollout::NoTaskChange => "service settings only: no task replaced".into(),
        Rollout::Rolling {
            tasks: n,
            scale,
            parallelism,
            order,
            delay,
            monitor,
            failure_action,
            max_failure_ratio,
        } => {
            let at_once = match parallelism {
                0 => "all at once".to_string(),
                p => format!("{p} at a time"),
            };
            let order = match order {
                UpdateOrder::StopFirst => "stop-first",
                UpdateOrder::StartFirst => "start-first",
            };
            let action = match failure_action {
                FailureAction::Pause => "pause",
                FailureAction::Continue => "continue",
                FailureAction::Rollback => "roll back",
            };
            let mut s = format!(
                "rolling update: replace {}, {at_once}, {order}, delay {delay}, monitor {monitor}, on failure {action}",
                tasks(*n)
            );
            if *max_failure_ratio > 0.0 {
                let _ = write!(s, " (tolerating {}% failures)", max_failure_ratio * 100.0);
            }
            if let Some((a, b)) = scale {
                if b > a {
                    let _ = write!(s, "; then start {}", tasks(Some(b - a)));
                } else {
                    let _ = write!(s, "; and stop {}", tasks(Some(a - b)));
                }
            }
            s
        }
    })
}
