//! `/`: the status page.

use std::fmt::Write as _;

use axum::extract::State as AxState;
use axum::response::Html;

use super::{status_view, Ctx};

pub async fn page(AxState(cluster): Ctx) -> Html<String> {
    let v = status_view(&*cluster);
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
         <h1>reconciler</h1><p>Live commit <code>{}</code> · {} · nodes: {} · ingress: {}</p>{}{}\
         <table><tr><th>SERVICE</th><th>MODE</th><th>REPLICAS</th><th>IMAGE</th><th>PORTS</th><th>UPDATE</th></tr>{}</table>",
        esc(&applied),
        if v.converged { "converged" } else { "converging" },
        esc(&v.nodes.to_string()),
        esc(&v.node.ingress_backend),
        refused,
        v.node.engine_error.as_ref().map(|e| format!("<p class=bad>Docker Engine: {}</p>", esc(e))).unwrap_or_default()
            + &v.node.cluster_error.as_ref().map(|e| format!("<p class=bad>Cluster: writes do not commit: {}</p>", esc(e))).unwrap_or_default(),
        rows
    ))
}
