//! `reconciler plan`, `validate` and `export` against real git repositories made by the test,
//! run as the real binary. Plan output is compared with checked-in snapshots.

use crate::support::{project_dir, reconciler, stderr, stdout, GitRepo};

const SHOP_V1: &str = r#"
version: "3.8"
services:
  web:
    image: example/web:1
    ports: ["8080:80"]
    environment:
      LOG_LEVEL: info
    secrets: [api_key]
    deploy:
      replicas: 2
      update_config:
        parallelism: 2
        delay: 5s
        order: start-first
        failure_action: rollback
  worker:
    image: example/worker:1
    deploy:
      labels:
        team: shop
secrets:
  api_key:
    file: ./api_key.txt
"#;

const SHOP_V2: &str = r#"
version: "3.8"
services:
  web:
    image: example/web:2
    ports: ["8080:80"]
    environment:
      LOG_LEVEL: debug
      FEATURE_X: "on"
    secrets: [api_key]
    deploy:
      replicas: 3
      update_config:
        parallelism: 2
        delay: 5s
        order: start-first
        failure_action: rollback
  worker:
    image: example/worker:1
    deploy:
      labels:
        team: checkout
secrets:
  api_key:
    file: ./api_key.txt
"#;

const CACHE_V1: &str = "services:\n  redis:\n    image: redis:7\n";
const CACHE_V2: &str = "services:\n  redis:\n    image: redis:7\n    deploy:\n      replicas: 3\n";
const OLD: &str = "services:\n  app:\n    image: example/old:1\n";
const METRICS: &str = r#"
services:
  agent:
    image: example/agent:1
    deploy:
      mode: global
      placement:
        constraints: [node.platform.os == linux]
"#;

const SECRET_V1: &str = "hunter2-first-version";
const SECRET_V2: &str = "hunter2-second-version";

/// Two commits: the second rolls web (image, env, replicas, secret content), relabels worker,
/// scales cache, removes `old` and adds `metrics`.
fn two_commits() -> GitRepo {
    let repo = GitRepo::new();
    repo.write(&[
        ("stacks/shop/compose.yml", Some(SHOP_V1)),
        ("stacks/shop/api_key.txt", Some(SECRET_V1)),
        ("stacks/cache/compose.yml", Some(CACHE_V1)),
        ("stacks/old/docker-compose.yml", Some(OLD)),
        ("README.md", Some("not a stack\n")),
    ]);
    repo.commit("first");
    repo.write(&[
        ("stacks/shop/compose.yml", Some(SHOP_V2)),
        ("stacks/shop/api_key.txt", Some(SECRET_V2)),
        ("stacks/cache/compose.yml", Some(CACHE_V2)),
        ("stacks/old/docker-compose.yml", None),
        ("stacks/metrics/stack.yml", Some(METRICS)),
    ]);
    repo.commit("second");
    repo
}

/// Commit ids change with every run: replace them before comparing with a snapshot.
fn stable(text: &str, repo: &GitRepo) -> String {
    let r = git2::Repository::open(repo.path()).unwrap();
    let mut out = text.to_string();
    for (rev, label) in [("HEAD", "<head>"), ("HEAD~1", "<parent>")] {
        let id = r.revparse_single(rev).unwrap().id().to_string();
        out = out.replace(&id, label).replace(&id[..7], label);
    }
    out
}

#[test]
fn plan_between_two_commits_shows_field_changes_and_rollouts() {
    let repo = two_commits();
    let out = reconciler(
        repo.path(),
        &["plan", "stacks", "--ref", "HEAD", "--against-ref", "HEAD~1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stable(&stdout(&out), &repo);
    insta::assert_snapshot!("plan_two_commits", text);
    for stream in [stdout(&out), stderr(&out)] {
        assert!(
            !stream.contains(SECRET_V1) && !stream.contains(SECRET_V2),
            "secret content leaked"
        );
    }
}

#[test]
fn plan_json_is_machine_readable() {
    let repo = two_commits();
    let out = reconciler(
        repo.path(),
        &[
            "plan",
            "stacks",
            "--ref",
            "HEAD",
            "--against-ref",
            "HEAD~1",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let stacks: Vec<(&str, &str)> = plan["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stacks,
        [
            ("cache", "update"),
            ("metrics", "create"),
            ("old", "remove"),
            ("shop", "update")
        ]
    );
    insta::assert_snapshot!("plan_two_commits_json", stable(&stdout(&out), &repo));
}

#[test]
fn unchanged_commit_plans_nothing_and_exits_zero() {
    let repo = two_commits();
    let out = reconciler(
        repo.path(),
        &["plan", "stacks", "--ref", "HEAD", "--against-ref", "HEAD"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes"), "{}", stdout(&out));
}

#[test]
fn plan_against_an_exported_state_matches_plan_against_the_ref() {
    let repo = two_commits();
    let export = reconciler(repo.path(), &["export", "stacks", "--ref", "HEAD~1"]);
    assert_eq!(export.status.code(), Some(0), "{}", stderr(&export));
    let state_path = repo.path().join("state.json");
    std::fs::write(&state_path, &export.stdout).unwrap();
    assert!(
        !stdout(&export).contains(SECRET_V1),
        "export holds secret content"
    );

    let via_state = reconciler(
        repo.path(),
        &[
            "plan",
            "stacks",
            "--ref",
            "HEAD",
            "--against-state",
            "state.json",
            "--json",
        ],
    );
    let via_ref = reconciler(
        repo.path(),
        &[
            "plan",
            "stacks",
            "--ref",
            "HEAD",
            "--against-ref",
            "HEAD~1",
            "--json",
        ],
    );
    assert_eq!(via_state.status.code(), Some(2), "{}", stderr(&via_state));
    let a: serde_json::Value = serde_json::from_slice(&via_state.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&via_ref.stdout).unwrap();
    assert_eq!(a["stacks"], b["stacks"]);
}

#[test]
fn a_state_file_of_another_format_is_refused_clearly() {
    let repo = two_commits();
    std::fs::write(
        repo.path().join("x.json"),
        r#"{"format": "something", "version": 1}"#,
    )
    .unwrap();
    std::fs::write(
        repo.path().join("y.json"),
        r#"{"format": "reconciler.state", "version": 9, "stacks": {}}"#,
    )
    .unwrap();
    let out = reconciler(
        repo.path(),
        &["plan", "stacks", "--against-state", "x.json"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("x.json: not a reconciler state export"),
        "{}",
        stderr(&out)
    );
    let out = reconciler(
        repo.path(),
        &["plan", "stacks", "--against-state", "y.json"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("version 9 is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_work_tree_is_planned_against_a_ref() {
    let repo = two_commits();
    // An uncommitted edit in the work tree: only that shows.
    let edited = SHOP_V2.replace("example/worker:1", "example/worker:2");
    repo.write(&[("stacks/shop/compose.yml", Some(&edited))]);
    let out = reconciler(repo.path(), &["plan", "stacks", "--against-ref", "HEAD"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("~ service shop_worker"), "{text}");
    assert!(
        text.contains("image  example/worker:1 -> example/worker:2"),
        "{text}"
    );
    assert!(!text.contains("shop_web"), "{text}");
    assert!(
        text.contains("Plan: 0 to create, 1 to update, 0 to remove."),
        "{text}"
    );
}

#[test]
fn an_invalid_desired_state_is_an_error_not_a_plan() {
    let repo = two_commits();
    repo.write(&[(
        "stacks/cache/compose.yml",
        Some("services:\n  redis:\n    image: redis:7\n    deploy:\n      replicas: -1\n"),
    )]);
    let out = reconciler(repo.path(), &["plan", "stacks", "--against-ref", "HEAD"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("stacks/cache/compose.yml:5:17: services.redis.deploy.replicas: expected an integer from 0 to 10000, found -1"),
        "{err}"
    );
    assert!(
        stdout(&out).is_empty(),
        "no plan is printed: {}",
        stdout(&out)
    );
}

#[test]
fn validate_reports_file_line_column_and_path() {
    let repo = GitRepo::new();
    repo.write(&[(
        "stacks/web/compose.yml",
        Some("version: \"3.8\"\nservices:\n  web:\n    image: nginx\n    deploy:\n      mode: replicated\n      replicas: three\n"),
    )]);
    let out = reconciler(repo.path(), &["validate", "stacks"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "stacks/web/compose.yml:7:17: services.web.deploy.replicas: expected an integer from 0 to 10000, found \"three\""
        ),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("1 error in 1 stack"),
        "{}",
        stdout(&out)
    );

    // A single file can be validated too, and JSON output carries the same facts.
    let out = reconciler(
        repo.path(),
        &["validate", "stacks/web/compose.yml", "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["line"], 7);
    assert_eq!(v["diagnostics"][0]["path"], "services.web.deploy.replicas");
}

#[test]
fn the_examples_validate_and_their_secrets_decrypt_with_the_example_key() {
    let dir = project_dir();
    let out = reconciler(
        &dir,
        &[
            "validate",
            "examples/stacks",
            "--identity",
            "examples/keys/example-only.agekey",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("4 stacks, 5 services: valid"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_wrong_key_names_the_secret_and_keeps_the_plaintext_out() {
    let dir = project_dir();
    let other_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other_key.path(), reconciler::secrets::generate_identity().0).unwrap();
    let key = other_key.path().to_str().unwrap();
    let out = reconciler(&dir, &["plan", "examples/stacks", "--identity", key]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("web_api_key"), "{err}");
    assert!(err.contains("examples/stacks/web/compose.yml:"), "{err}");
    assert!(!err.contains("example-api-key-not-a-real-secret"), "{err}");
}

#[test]
fn the_checked_in_schema_matches_the_types() {
    let checked_in =
        std::fs::read_to_string(project_dir().join("schemas/stack.schema.json")).unwrap();
    let generated = reconciler::spec::schema::stack_schema_text();
    assert!(
        checked_in == generated,
        "schemas/stack.schema.json is stale: run `cargo run -- schema > schemas/stack.schema.json`"
    );
    let out = reconciler(&project_dir(), &["schema"]);
    assert_eq!(stdout(&out), generated);
}

#[test]
fn a_port_published_by_two_stacks_names_the_file_line_and_field() {
    let repo = GitRepo::new();
    repo.write(&[
        (
            "stacks/a/compose.yml",
            Some("services:\n  web:\n    image: x\n    ports: [\"8080:80\"]\n"),
        ),
        (
            "stacks/b/compose.yml",
            Some("services:\n  api:\n    image: y\n    ports:\n      - \"8080:80\"\n"),
        ),
    ]);
    let out = reconciler(repo.path(), &["validate", "stacks"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("stacks/b/compose.yml:5:7: services.api.ports: port 8080 is already published by service a_web of another stack"),
        "{}",
        stderr(&out)
    );
}

/// Between two revisions plan reads only the stacks whose inputs changed; these are the cases
/// where a stack's directory is the same and its stack still changes, or still matters.
#[test]
fn plan_reads_only_what_changed_and_what_it_depends_on() {
    let repo = GitRepo::new();
    let app = |port: u16| {
        format!("services:\n  app:\n    image: example/app:1\n    ports: [\"{port}:80\"]\n    secrets: [token]\nsecrets:\n  token:\n    file: ../shared/token.txt\n")
    };
    repo.write(&[
        ("app/compose.yml", Some(&app(8081))),
        ("shared/token.txt", Some("one")),
        (
            "web/compose.yml",
            Some("services:\n  web:\n    image: example/web:${TAG}\n    ports: [\"8080:80\"]\n"),
        ),
        (".env", Some("TAG=1\n")),
        // Broken in every revision, and never touched: a plan of other changes need not
        // read it (validate does).
        (
            "legacy/compose.yml",
            Some("services:\n  old:\n    image: example/old:1\n    replicas: 2\n"),
        ),
    ]);
    repo.commit("v1");
    let plan = || {
        reconciler(
            repo.path(),
            &["plan", "--ref", "HEAD", "--against-ref", "HEAD~1"],
        )
    };

    // A file outside the stack's directory, read through `..`.
    repo.write(&[("shared/token.txt", Some("two"))]);
    repo.commit("v2");
    let out = plan();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("~ secret app_token") && text.contains("content changed"),
        "{text}"
    );
    assert!(!text.contains("stack web"), "{text}");

    // The repo's .env, which every stack reads.
    repo.write(&[(".env", Some("TAG=2\n"))]);
    repo.commit("v3");
    let out = plan();
    assert_eq!(
        out.status.code(),
        Some(1),
        "every stack is read again, the broken one too"
    );
    assert!(
        stderr(&out).contains("legacy/compose.yml:4"),
        "{}",
        stderr(&out)
    );
    repo.write(&[("legacy/compose.yml", None)]);
    repo.commit("v4: the broken stack goes");
    repo.write(&[(".env", Some("TAG=3\n"))]);
    repo.commit("v5");
    let out = plan();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("image  example/web:2 -> example/web:3"),
        "{}",
        stdout(&out)
    );

    // A changed stack now publishes a port that a stack left unread publishes: still caught.
    repo.write(&[(
        "other/compose.yml",
        Some("services:\n  x:\n    image: example/x:1\n    ports: [\"8081:80\"]\n"),
    )]);
    repo.commit("v6");
    let out = plan();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("port 8081") && err.contains("another stack"),
        "{err}"
    );
}

/// Which stacks a plan may leave unread, between a work tree and a commit and between two
/// commits: only those whose every input is the same.
#[test]
fn unchanged_stacks_are_exactly_those_whose_inputs_are_the_same() {
    use reconciler::desired::{unchanged_stacks, GitTree, WorkTree};
    let svc = |image: &str| format!("services:\n  s:\n    image: {image}\n");
    let repo = GitRepo::new();
    repo.write(&[
        ("same/compose.yml", Some(&svc("a:1"))),
        ("same/conf.txt", Some("x")),
        ("edited/compose.yml", Some(&svc("b:1"))),
        ("grows/compose.yml", Some(&svc("c:1"))),
        (
            "reaches/compose.yml",
            Some("services:\n  s:\n    image: d:1\n    env_file: ../shared.env\n"),
        ),
        ("shared.env", Some("A=1\n")),
    ]);
    repo.commit("v1");
    // In the work tree: an edit, a file git does not know yet, nothing else.
    repo.write(&[
        ("edited/compose.yml", Some(&svc("b:2"))),
        ("grows/new.txt", Some("untracked")),
    ]);
    let head = GitTree::open(repo.path(), "HEAD", "").unwrap();
    let work = WorkTree::new(repo.path());
    let same: Vec<String> = unchanged_stacks(&work, &head)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(same, ["same"]);
    // Between two commits, by git's ids.
    repo.commit("v2");
    let (v1, v2) = (
        GitTree::open(repo.path(), "HEAD~1", "").unwrap(),
        GitTree::open(repo.path(), "HEAD", "").unwrap(),
    );
    let same: Vec<String> = unchanged_stacks(&v2, &v1).unwrap().into_iter().collect();
    assert_eq!(same, ["same"]);
    // A file made executable is a change.
    use std::os::unix::fs::PermissionsExt;
    let conf = repo.path().join("same/conf.txt");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o755)).unwrap();
    let same: Vec<String> = unchanged_stacks(&WorkTree::new(repo.path()), &v2)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        same,
        ["edited", "grows"],
        "committed in v2; `same` is not the same now"
    );
}
