//! Docker commands that would change what git says (`service scale`, `service update`, `stack
//! rm`, ...). They exist so that muscle memory gets an answer instead of "unrecognized
//! subcommand": the GitOps way to do the same. They change nothing and exit 1.

/// Flags of `docker service update` with a direct equivalent in a stack file.
const UPDATE_FLAGS: [(&str, &str); 12] = [
    ("--image", "image: VALUE"),
    ("--replicas", "deploy.replicas: VALUE"),
    ("--env-add", "environment: add VALUE"),
    ("--env-rm", "environment: remove VALUE"),
    ("--label-add", "deploy.labels: add VALUE"),
    ("--label-rm", "deploy.labels: remove VALUE"),
    ("--container-label-add", "labels: add VALUE"),
    ("--publish-add", "ports: add VALUE"),
    (
        "--constraint-add",
        "deploy.placement.constraints: add VALUE",
    ),
    ("--limit-memory", "deploy.resources.limits.memory: VALUE"),
    (
        "--update-parallelism",
        "deploy.update_config.parallelism: VALUE",
    ),
    ("--update-order", "deploy.update_config.order: VALUE"),
];

/// Where a service `<stack>_<name>` is written: its stack's directory and its key.
fn whereabouts(service: &str) -> String {
    match service.split_once('_') {
        Some((stack, name)) if !stack.is_empty() && !name.is_empty() => format!(
            "services.{name} in the stack file of stack {stack} ({stack}/docker-stack.yml, compose.yml or the like in the stacks repo)"
        ),
        _ => format!(
            "the service in its stack file (service names are <stack>_<name>; {service:?} has no stack part)"
        ),
    }
}

const THEN: &str = "then commit and push; `reconciler plan --against-ref origin/main` shows what the commit will change, and `reconciler sync --wait` follows it until it converges";

/// `service scale NAME=REPLICAS ...`
pub fn scale(targets: &[String]) -> String {
    let mut out = String::from("reconciler is driven by git: scale by commit.\n");
    for t in targets {
        match t.split_once('=') {
            Some((service, n)) => out.push_str(&format!(
                "  {service}: set deploy.replicas: {n} under {}\n",
                whereabouts(service)
            )),
            None => out.push_str(&format!(
                "  {t}: expected SERVICE=REPLICAS (as `docker service scale web_web=3`)\n"
            )),
        }
    }
    out.push_str(THEN);
    out
}

/// `service update [FLAGS] NAME`
pub fn update(args: &[String]) -> String {
    let service = args.iter().rev().find(|a| !a.starts_with('-'));
    let mut out = String::from("reconciler is driven by git: update by commit.\n");
    let place = service.map_or_else(
        || "the service in its stack file".to_string(),
        |s| whereabouts(s),
    );
    let mut said = false;
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if flag == "--force" {
            out.push_str(
                "  --force: a commit that changes nothing rolls nothing; change something the tasks see (an env value, a label) to replace them\n",
            );
            said = true;
        } else if flag == "--rollback" {
            out.push_str(
                "  --rollback: `git revert` the commit (or `reconciler service rollback NAME` for drift until the next commit)\n",
            );
            said = true;
        } else if let Some((_, key)) = UPDATE_FLAGS.iter().find(|(f, _)| *f == flag) {
            let value = inline
                .or_else(|| it.next_if(|v| !v.starts_with('-')).cloned())
                .unwrap_or_default();
            out.push_str(&format!("  {flag}: set {}\n", key.replace("VALUE", &value)));
            said = true;
        }
    }
    if !said {
        out.push_str("  change what you meant to change\n");
    }
    out.push_str(&format!("  under {place}\n{THEN}"));
    out
}

/// `service create`, `service rm`, `stack deploy`, `stack rm`
pub fn lifecycle(what: &str, name: Option<&str>) -> String {
    let name = name.unwrap_or("NAME");
    let how = match what {
        "service create" => "add it under services: in a stack file".to_string(),
        "service rm" => format!("remove {}", whereabouts(name)),
        "stack deploy" => format!(
            "commit a directory {name}/ with a docker-stack.yml (or compose.yml) in the stacks repo"
        ),
        _ => format!(
            "`git rm -r {name}/` in the stacks repo (removing the last stack needs an empty .keep at the stacks root)"
        ),
    };
    format!("reconciler is driven by git: instead of `{what}`, {how}; {THEN}")
}

/// `service rm` / `stack rm` of several names (or none): one answer each.
pub fn removals(what: &str, names: &[String]) -> String {
    if names.is_empty() {
        return lifecycle(what, None);
    }
    names
        .iter()
        .map(|n| lifecycle(what, Some(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_names_the_key_and_the_stack_directory() {
        let text = scale(&["web_api=5".into(), "oops".into()]);
        assert!(
            text.contains("web_api: set deploy.replicas: 5 under services.api in the stack file of stack web (web/"),
            "{text}"
        );
        assert!(text.contains("oops: expected SERVICE=REPLICAS"), "{text}");
    }

    #[test]
    fn update_flags_become_stack_file_keys() {
        let args: Vec<String> = [
            "--image",
            "nginx:1.27",
            "--env-add=MODE=fast",
            "--force",
            "--detach",
            "shop_web",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let text = update(&args);
        assert!(text.contains("--image: set image: nginx:1.27"), "{text}");
        assert!(
            text.contains("--env-add: set environment: add MODE=fast"),
            "{text}"
        );
        assert!(
            text.contains("--force: a commit that changes nothing"),
            "{text}"
        );
        assert!(
            text.contains("under services.web in the stack file of stack shop"),
            "{text}"
        );
        let bare = update(&["lonely".into()]);
        assert!(bare.contains("has no stack part"), "{bare}");
    }
}
