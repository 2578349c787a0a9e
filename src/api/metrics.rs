//! `/metrics`: Prometheus text format.

use std::fmt::Write as _;

use axum::extract::State as AxState;
use axum::response::IntoResponse;

use super::{status_view, Ctx};

pub async fn metrics(AxState(cluster): Ctx) -> impl IntoResponse {
    let view = status_view(&*cluster);
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
        u8::from(view.node.engine_error.is_none())
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
