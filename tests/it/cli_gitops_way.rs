//! Docker commands that would change what git says answer with the GitOps way, from the real
//! binary: exit 1, nothing on stdout, and they take docker's arguments as docker users type
//! them (no "unrecognized argument" for `--image` or `-c`).

use std::path::Path;

use super::support::{reconciler, stderr, stdout};

fn refused(args: &[&str]) -> String {
    let out = reconciler(Path::new("."), args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("reconciler is driven by git"),
        "{args:?}: {err}"
    );
    assert!(err.contains("then commit and push"), "{args:?}: {err}");
    err
}

#[test]
fn commands_that_would_change_git_say_the_gitops_way_and_change_nothing() {
    let err = refused(&["service", "scale", "shop_web=5", "shop_worker=2"]);
    assert!(
        err.contains(
            "shop_web: set deploy.replicas: 5 under services.web in the stack file of stack shop"
        ) && err.contains("shop_worker: set deploy.replicas: 2"),
        "{err}"
    );

    let err = refused(&[
        "service",
        "update",
        "--image",
        "nginx:1.27",
        "--env-add",
        "MODE=fast",
        "--detach",
        "shop_web",
    ]);
    assert!(
        err.contains("--image: set image: nginx:1.27")
            && err.contains("--env-add: set environment: add MODE=fast")
            && err.contains("under services.web in the stack file of stack shop"),
        "{err}"
    );
    let err = refused(&["service", "update", "--force", "shop_web"]);
    assert!(
        err.contains("a commit that changes nothing rolls nothing"),
        "{err}"
    );

    let err = refused(&[
        "service",
        "create",
        "--name",
        "x",
        "--replicas",
        "2",
        "nginx",
    ]);
    assert!(
        err.contains("add it under services: in a stack file"),
        "{err}"
    );
    let err = refused(&["service", "rm", "shop_web"]);
    assert!(
        err.contains("remove services.web in the stack file of stack shop"),
        "{err}"
    );

    let err = refused(&["stack", "deploy", "-c", "docker-stack.yml", "shop"]);
    assert!(err.contains("commit a directory shop/"), "{err}");
    let err = refused(&["stack", "rm", "shop"]);
    assert!(err.contains("`git rm -r shop/`"), "{err}");
}
