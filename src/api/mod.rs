//! The HTTP API of a running `reconciler up`: JSON for the CLI and machines, a status page for
//! people, `/metrics` for Prometheus. The webhook receiver lives in `gitops` and is merged in.

pub mod views;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::desired::DesiredState;
use crate::manager::Shared;
use crate::plan::state_file::StateFile;
use crate::spec::StackSpec;
use crate::store::{Command, State};
use views::*;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(list_services))
        .route("/api/v1/services/{name}", get(inspect_service))
        .route("/api/v1/services/{name}/tasks", get(service_tasks))
        .route("/api/v1/services/{name}/rollback", post(rollback))
        .route("/api/v1/stacks", get(list_stacks))
        .route("/api/v1/tasks", get(all_tasks))
        .route("/api/v1/state", get(export_state))
        .route("/api/v1/sync", post(sync))
        .with_state(shared)
}

type Ctx = AxState<Arc<Shared>>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub fn status_view(shared: &Shared) -> StatusView {
    let git = serde_json::to_value(shared.watcher.status()).unwrap_or_default();
    shared.with_state(|s| {
        let services = services(s);
        let engine_error = shared.engine.read().expect("lock").clone();
        StatusView {
            node: shared.node_id.clone(),
            revision: s.revision.clone(),
            git,
            converged: engine_error.is_none() && converged(&services),
            engine_error,
            ingress_backend: shared.ingress_backend.to_string(),
            uptime_seconds: shared.started.elapsed().as_secs(),
            stacks: stacks(s),
            services,
        }
    })
}

async fn status(AxState(shared): Ctx) -> Json<StatusView> {
    Json(status_view(&shared))
}

async fn list_services(AxState(shared): Ctx) -> Json<Vec<ServiceView>> {
    Json(shared.with_state(services))
}

async fn list_stacks(AxState(shared): Ctx) -> Json<Vec<StackView>> {
    Json(shared.with_state(stacks))
}

async fn all_tasks(AxState(shared): Ctx) -> Json<Vec<TaskView>> {
    Json(shared.with_state(|s| tasks(s, None)))
}

async fn inspect_service(AxState(shared): Ctx, Path(name): Path<String>) -> Response {
    match shared.with_state(|s| s.services.get(&name).cloned()) {
        Some(svc) => Json(svc).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service {name}")),
    }
}

async fn service_tasks(AxState(shared): Ctx, Path(name): Path<String>) -> Response {
    let found = shared.with_state(|s| s.services.contains_key(&name));
    if !found {
        return error(StatusCode::NOT_FOUND, format!("no service {name}"));
    }
    Json(shared.with_state(|s| tasks(s, Some(&name)))).into_response()
}

async fn rollback(AxState(shared): Ctx, Path(name): Path<String>) -> Response {
    let check = shared.with_state(|s| {
        s.check(&Command::RollbackService {
            service: name.clone(),
            manual: true,
            at: 0,
        })
    });
    if let Err(e) = check {
        return error(StatusCode::CONFLICT, e.to_string());
    }
    shared.apply(vec![Command::RollbackService {
        service: name.clone(),
        manual: true,
        at: crate::manager::now_ms(),
    }]);
    Json(serde_json::json!({ "service": name, "rolled_back": true })).into_response()
}

async fn sync(AxState(shared): Ctx) -> Response {
    match shared.watcher.sync_now().await {
        Ok(commit) => Json(commit).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// What the cluster runs, in the state export format (`plan --server` diffs against it).
pub fn running_state(s: &State) -> DesiredState {
    let mut out = DesiredState {
        revision: s.revision.applied.as_ref().map(|a| a.commit.clone()),
        ..Default::default()
    };
    for svc in s.services.values() {
        entry(&mut out, &svc.spec.stack)
            .services
            .insert(svc.spec.name.clone(), svc.spec.clone());
    }
    // Objects are keyed by their short name in a stack file; the full name is unique too.
    for (name, o) in &s.networks {
        entry(&mut out, &o.stack)
            .networks
            .insert(short(&o.stack, name), o.spec.clone());
    }
    for (name, o) in &s.volumes {
        entry(&mut out, &o.stack)
            .volumes
            .insert(short(&o.stack, name), o.spec.clone());
    }
    for (name, o) in &s.secrets {
        entry(&mut out, &o.stack)
            .secrets
            .insert(short(&o.stack, name), o.spec.clone());
    }
    for (name, o) in &s.configs {
        entry(&mut out, &o.stack)
            .configs
            .insert(short(&o.stack, name), o.spec.clone());
    }
    out
}

fn entry<'a>(out: &'a mut DesiredState, stack: &str) -> &'a mut StackSpec {
    out.stacks
        .entry(stack.to_string())
        .or_insert_with(|| StackSpec {
            name: stack.to_string(),
            ..Default::default()
        })
}

fn short(stack: &str, full: &str) -> String {
    full.strip_prefix(&format!("{stack}_"))
        .unwrap_or(full)
        .to_string()
}

async fn export_state(AxState(shared): Ctx) -> Json<StateFile> {
    Json(StateFile::new(shared.with_state(running_state)))
}

async fn metrics(AxState(shared): Ctx) -> impl IntoResponse {
    let view = status_view(&shared);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP reconciler_service_replicas_running Running tasks per service."
    );
    let _ = writeln!(out, "# TYPE reconciler_service_replicas_running gauge");
    for s in &view.services {
        let _ = writeln!(
            out,
            "reconciler_service_replicas_running{{service=\"{}\",stack=\"{}\"}} {}",
            s.name, s.stack, s.running
        );
    }
    let _ = writeln!(
        out,
        "# HELP reconciler_service_replicas_desired Desired tasks per replicated service."
    );
    let _ = writeln!(out, "# TYPE reconciler_service_replicas_desired gauge");
    for s in &view.services {
        if let Some(d) = s.desired {
            let _ = writeln!(
                out,
                "reconciler_service_replicas_desired{{service=\"{}\",stack=\"{}\"}} {d}",
                s.name, s.stack
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP reconciler_converged 1 when every service runs its desired spec."
    );
    let _ = writeln!(out, "# TYPE reconciler_converged gauge");
    let _ = writeln!(out, "reconciler_converged {}", u8::from(view.converged));
    let _ = writeln!(
        out,
        "# HELP reconciler_engine_up 1 while the Docker Engine answers."
    );
    let _ = writeln!(out, "# TYPE reconciler_engine_up gauge");
    let _ = writeln!(
        out,
        "reconciler_engine_up {}",
        u8::from(view.engine_error.is_none())
    );
    let _ = writeln!(
        out,
        "# HELP reconciler_revision_refused 1 while the newest commit is refused."
    );
    let _ = writeln!(out, "# TYPE reconciler_revision_refused gauge");
    let refused = match (&view.revision.refused, &view.revision.applied) {
        (Some(r), Some(a)) => r.at > a.at,
        (Some(_), None) => true,
        _ => false,
    };
    let _ = writeln!(out, "reconciler_revision_refused {}", u8::from(refused));
    ([("content-type", "text/plain; version=0.0.4")], out)
}

async fn page(AxState(shared): Ctx) -> Html<String> {
    let v = status_view(&shared);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut rows = String::new();
    for s in &v.services {
        let replicas = match s.desired {
            Some(d) => format!("{}/{d}", s.running),
            None => format!("{} (global)", s.running),
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(&s.mode),
            replicas,
            esc(&s.image),
            esc(&s.ports.join(", ")),
            esc(&s.update_state.map(|u| format!("{u:?}")).unwrap_or_default()),
        );
    }
    let applied = v
        .revision
        .applied
        .as_ref()
        .map(|a| a.commit.clone())
        .unwrap_or_else(|| "none yet".into());
    let refused = v
        .revision
        .refused
        .as_ref()
        .map(|r| {
            format!(
                "<p class=bad>Refused commit {}: {}</p>",
                esc(&r.commit),
                esc(&r.errors.join("; "))
            )
        })
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2><title>reconciler</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}.bad{{color:#b00}}</style>\
         <h1>reconciler</h1><p>Live commit <code>{}</code> · {} · ingress: {}</p>{}{}\
         <table><tr><th>SERVICE</th><th>MODE</th><th>REPLICAS</th><th>IMAGE</th><th>PORTS</th><th>UPDATE</th></tr>{}</table>",
        esc(&applied),
        if v.converged { "converged" } else { "converging" },
        esc(&v.ingress_backend),
        refused,
        v.engine_error.as_ref().map(|e| format!("<p class=bad>Docker Engine: {}</p>", esc(e))).unwrap_or_default(),
        rows
    ))
}
