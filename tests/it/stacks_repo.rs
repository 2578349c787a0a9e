//! Stacks as users write them, read by the real binary from real git repositories: which
//! directories are stacks and which file is theirs, what their `${VAR}`s may see, relative bind
//! mounts, absolute secret targets, host IPs on ports and image references. The stack files
//! are public ones from tests/fixtures/spec/real/ (SOURCES.md says whose), not written here.

use std::path::{Path, PathBuf};

use super::support::{reconciler, stderr, stdout, GitRepo};

fn real(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec/real")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn export(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let out = reconciler(dir, &all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("export prints JSON")
}

#[test]
fn validate_inside_a_stack_directory_reads_that_directory_as_one_stack() {
    let repo = GitRepo::new();
    repo.write(&[(
        "vote/docker-stack.yml",
        Some(&real("voting-app-docker-stack.yml")),
    )]);
    repo.commit("the voting app");
    let vote = repo.path().join("vote");
    for args in [vec!["validate"], vec!["validate", "."]] {
        let out = reconciler(&vote, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("1 stack, 5 services: valid"),
            "{args:?}: {}",
            stdout(&out)
        );
    }
    // The stack is named after its directory, in plan and export as in validate.
    let state = export(&vote, &[]);
    assert!(
        state["stacks"]["vote"]["services"]["vote_redis"].is_object(),
        "{state:#}"
    );
    let out = reconciler(&vote, &["plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("+ service vote_worker"),
        "{}",
        stdout(&out)
    );
    // From the repository: the same stack, by its directory.
    let out = reconciler(repo.path(), &["validate", "vote", "--ref", "HEAD"]);
    assert!(
        stdout(&out).contains("1 stack, 5 services: valid"),
        "{}",
        stdout(&out)
    );

    // An error in a stack directory is an error, not "0 stacks: valid".
    repo.write(&[(
        "vote/docker-stack.yml",
        Some("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: many\n"),
    )]);
    let out = reconciler(&vote, &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("docker-stack.yml:5:17: services.web.deploy.replicas"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_path_with_no_stack_is_an_error_that_names_the_file_names_looked_for() {
    let repo = GitRepo::new();
    repo.write(&[("stacks/README.md", Some("nothing here yet\n"))]);
    for cmd in ["validate", "plan", "export"] {
        let out = reconciler(repo.path(), &[cmd, "stacks"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("no stack here"), "{cmd}: {err}");
        for name in [
            "docker-stack.yml",
            "docker-stack.yaml",
            "compose.yaml",
            "docker-compose.yml",
        ] {
            assert!(err.contains(name), "{cmd}: {err}");
        }
    }
    let out = reconciler(repo.path(), &["validate", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    // `.keep` says "no stacks, on purpose".
    repo.write(&[("stacks/.keep", Some(""))]);
    let out = reconciler(repo.path(), &["validate", "stacks"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("0 stacks, 0 services: valid"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_stack_file_beside_directories_of_stacks_is_refused_not_read_as_the_only_stack() {
    // A local-development compose file committed at the root of a stacks repo: read as "the
    // one stack here", it would replace (and `up` would remove) every stack under it.
    let repo = GitRepo::new();
    repo.write(&[
        (
            "vote/docker-stack.yml",
            Some(&real("voting-app-docker-stack.yml")),
        ),
        (
            "docker-compose.yml",
            Some("services:\n  web:\n    image: nginx\n"),
        ),
    ]);
    repo.commit("a compose file at the root");
    for args in [
        vec!["validate"],
        vec!["plan"],
        vec!["validate", "--ref", "HEAD"],
    ] {
        let out = reconciler(repo.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("docker-compose.yml")
                && err.contains("also directories of stacks (vote)")
                && err.contains("move docker-compose.yml into a directory of its own"),
            "{args:?}: {err}"
        );
    }
    // Inside the stack's own directory nothing is ambiguous.
    let out = reconciler(&repo.path().join("vote"), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn docker_stack_yml_is_a_stack_file_and_wins_over_a_compose_file_with_a_warning() {
    let repo = GitRepo::new();
    repo.write(&[
        (
            "stacks/vote/docker-stack.yml",
            Some(&real("voting-app-docker-stack.yml")),
        ),
        // The local-development file that so many repositories keep beside it.
        (
            "stacks/vote/docker-compose.yml",
            Some("services:\n  dev:\n    build: .\n"),
        ),
        (
            "stacks/swarmpit/docker-stack.yaml",
            Some(&real("swarmpit.yml")),
        ),
    ]);
    let out = reconciler(repo.path(), &["validate", "stacks"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 stacks, 9 services: valid"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("stacks/vote/docker-stack.yml: warning: this directory also holds docker-compose.yml: only docker-stack.yml is read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secrets_and_configs_with_absolute_targets_are_mounted_where_the_file_says() {
    // A public MinIO stack: `target: /minio.license` for a secret, with its .env beside it.
    let repo = GitRepo::new();
    repo.write(&[
        ("minio/docker-stack.yml", Some(&real("minio-traefik-docker-stack.yml"))),
        ("minio/minio/minio.license", Some("license\n")),
        (
            "minio/.env",
            Some("MINIO_NODE_HOSTNAME=node-1\nMINIO_API_HOSTNAME=s3.example.com\nMINIO_SERVER_HOSTNAME=minio.example.com\nMINIO_ROOT_USER=admin\nMINIO_ROOT_PASSWORD=changeme\nMINIO_BROWSER_REDIRECT_URL=https://minio.example.com\nMINIO_COMPRESSION_ENABLE=on\nMINIO_SITE_NAME=test\n"),
        ),
    ]);
    let out = reconciler(repo.path(), &["validate", "minio"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let state = export(repo.path(), &["minio"]);
    let secrets =
        &state["stacks"]["minio"]["services"]["minio_minio"]["task"]["container"]["secrets"];
    assert_eq!(secrets[0]["target"], "/minio.license", "{secrets:#}");

    // A relative target with ".." could climb out of /run/secrets: refused at `target:`.
    repo.write(&[(
        "bad/compose.yml",
        Some("services:\n  web:\n    image: nginx\n    secrets:\n      - source: key\n        target: ../../etc/passwd\nsecrets:\n  key:\n    file: ./key\n"),
    ), ("bad/key", Some("k"))]);
    let out = reconciler(repo.path(), &["validate", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad/compose.yml:6:17: services.web.secrets[0].target: secret target \"../../etc/passwd\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn relative_bind_mounts_become_repo_copies_or_stack_directories_and_say_which() {
    // A public WordPress stack that bind-mounts its php.ini and nginx configuration.
    let repo = GitRepo::new();
    repo.write(&[
        (
            "wp/docker-stack.yml",
            Some(&real("wordpress-mariadb-nginx-docker-stack.yml")),
        ),
        ("wp/apps/wordpress/php.ini", Some("memory_limit = 256M\n")),
        ("wp/apps/nginx/nginx_conf/nginx.conf", Some("events {}\n")),
        (
            "wp/apps/nginx/nginx_conf/conf.d/default.conf",
            Some("server {}\n"),
        ),
    ]);
    repo.commit("wordpress");
    let out = reconciler(repo.path(), &["validate", "wp", "--ref", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: services.wordpress.volumes[1]: ./apps/wordpress/php.ini is a file in git: each node mounts its own read-only copy"),
        "{err}"
    );
    let state = export(repo.path(), &["wp", "--ref", "HEAD"]);
    let mounts = state["stacks"]["wp"]["services"]["wp_wordpress"]["task"]["container"]["mounts"]
        .as_array()
        .unwrap()
        .clone();
    let php = mounts
        .iter()
        .find(|m| m["target"] == "/usr/local/etc/php/php.ini")
        .unwrap_or_else(|| panic!("{mounts:#?}"));
    assert_eq!(php["type"], "repo", "{php:#}");
    // Named relative to the stacks root, which is the stack directory here.
    assert_eq!(php["path"], "apps/wordpress/php.ini");
    let version = php["version"].as_str().unwrap().to_string();

    // The same content gives the same version from the work tree; a change gives a new one.
    let work = export(repo.path(), &["wp"]);
    assert!(work.to_string().contains(&version));
    repo.write(&[("wp/apps/wordpress/php.ini", Some("memory_limit = 512M\n"))]);
    assert!(!export(repo.path(), &["wp"]).to_string().contains(&version));

    // A path git does not track is the stack's own directory; one outside it is refused; ~ too.
    repo.write(&[(
        "data/compose.yml",
        Some("services:\n  db:\n    image: postgres:16\n    volumes:\n      - ./pgdata:/var/lib/postgresql/data\n      - ../elsewhere:/x\n      - ~/certs:/certs:ro\n"),
    )]);
    let out = reconciler(repo.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("data/compose.yml:5:9: warning: services.db.volumes[0]: ./pgdata is not in git: it becomes a directory of stack data on each node"), "{err}");
    assert!(err.contains("data/compose.yml:6:9: services.db.volumes[1]: ../elsewhere is not in git and lies outside the stack directory"), "{err}");
    assert!(err.contains("data/compose.yml:7:9: services.db.volumes[2]: \"~/certs\": ~ is the home directory of whoever runs the deploy"), "{err}");
    // And no suggestion to make a directory a config.
    assert!(!err.contains("configs:"), "{err}");
}

#[test]
fn a_host_ip_on_a_port_is_kept_not_widened() {
    // The line from a public media stack: `"192.168.6.167:8080:8080"  # External IP only`.
    let line = real("usenet-media-hybrid-host-ip.yml")
        .lines()
        .find(|l| l.contains("192.168.6.167:8080:8080"))
        .unwrap()
        .to_string();
    let repo = GitRepo::new();
    repo.write(&[(
        "media/compose.yml",
        Some(&format!(
            "services:\n  web:\n    image: nginx\n    ports:\n{line}\n      - target: 9090\n        published: 9090\n        host_ip: 127.0.0.1\n        mode: host\n"
        )),
    )]);
    let state = export(repo.path(), &["media"]);
    let ports = &state["stacks"]["media"]["services"]["media_web"]["endpoint"]["ports"];
    let ips: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["host_ip"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(ips, ["192.168.6.167", "127.0.0.1"], "{ports:#}");
}

#[test]
fn image_references_are_checked_with_dockers_grammar() {
    let repo = GitRepo::new();
    // Real files with registries on ports, digests and interpolated tags stay valid...
    repo.write(&[
        (
            "homeassistant/compose.yml",
            Some(&real("homeassistant-digest.yml")),
        ),
        (
            "logging/compose.yml",
            Some(&real("elk-logspout-localhost-registry.yml")),
        ),
    ]);
    let out = reconciler(repo.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // ...and what docker refuses is refused here, saying what is wrong.
    repo.write(&[(
        "bad/compose.yml",
        Some("services:\n  a:\n    image: ghcr.io//app:latest\n  b:\n    image: \"app:\"\n  c:\n    image: ${REGISTRY}/app:1\n"),
    )]);
    let out = reconciler(repo.path(), &["validate", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad/compose.yml:3:12: services.a.image: invalid image reference \"ghcr.io//app:latest\": a part of the name is empty"), "{err}");
    assert!(err.contains("bad/compose.yml:5:12: services.b.image: invalid image reference \"app:\": the tag after \":\" is empty"), "{err}");
    assert!(err.contains("bad/compose.yml:7:12: warning: services.c.image: variable REGISTRY is not set: substituting an empty string"), "{err}");
    assert!(err.contains("services.c.image: invalid image reference \"/app:1\": a part of the name is empty (two \"/\" in a row, or a \"/\" at either end) (at character 1) (${REGISTRY} in this value is unset or empty)"), "{err}");
}

fn repo_with_leak() -> (GitRepo, PathBuf) {
    let repo = GitRepo::new();
    repo.write(&[(
        "web/compose.yml",
        Some("services:\n  web:\n    image: nginx\n    environment:\n      LEAK: ${RECONCILER_WEBHOOK_SECRET}\n      GREETING: ${GREETING:-hello}\n      FROM_REPO: ${FROM_REPO}\n"),
    ), (".env", Some("FROM_REPO=repo-level\n"))]);
    let dir = repo.path().to_path_buf();
    (repo, dir)
}

#[test]
fn interpolation_sees_the_env_files_and_what_the_operator_passes_never_the_process_environment() {
    let (_repo, dir) = repo_with_leak();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(args)
            .current_dir(&dir)
            .env("RECONCILER_WEBHOOK_SECRET", "s3cr3t-webhook")
            .env("GREETING", "from-the-environment")
            .output()
            .unwrap()
    };
    let out = run(&["export", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("s3cr3t-webhook"), "{text}");
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    let env = &state["stacks"]["web"]["services"]["web_web"]["task"]["container"]["env"];
    // The repo's .env is read; the process environment is not, for any variable.
    assert_eq!(
        *env,
        serde_json::json!(["FROM_REPO=repo-level", "GREETING=hello", "LEAK="]),
        "{env:#}"
    );
    let err = stderr(&out);
    assert!(err.contains("web/compose.yml:5:13: warning: services.web.environment.LEAK: variable RECONCILER_WEBHOOK_SECRET is not set"), "{err}");

    // What the operator passes explicitly is seen, by name or with a value, or from a file.
    std::fs::write(dir.join("ops.env"), "FROM_REPO=from-the-env-file\n").unwrap();
    let out = run(&["export", ".", "--env", "GREETING", "--env-file", "ops.env"]);
    let state: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let env = &state["stacks"]["web"]["services"]["web_web"]["task"]["container"]["env"];
    assert_eq!(
        *env,
        serde_json::json!([
            "FROM_REPO=from-the-env-file",
            "GREETING=from-the-environment",
            "LEAK="
        ]),
        "{env:#}"
    );

    // ...but never the reconciler's own settings.
    let out = run(&["validate", ".", "--env", "RECONCILER_WEBHOOK_SECRET"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("the reconciler's own settings (RECONCILER_*) are never passed to stacks"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cr3t-webhook"));
    std::fs::write(dir.join("bad.env"), "RECONCILER_GIT_TOKEN=x\n").unwrap();
    let out = run(&["plan", ".", "--env-file", "bad.env"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_duplicate_block_is_reported_once_with_what_it_held_not_as_undefined_names() {
    let repo = GitRepo::new();
    repo.write(&[(
        "app/compose.yml",
        Some("services:\n  web:\n    image: nginx\n    networks: [front]\nnetworks:\n  back: {}\nnetworks:\n  front: {}\n"),
    )]);
    let out = reconciler(repo.path(), &["validate", "app"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("app/compose.yml:7:1: networks: duplicate key \"networks\": first defined at line 5, column 1; this block is ignored, with what it defines (front): merge it into the first"),
        "{err}"
    );
    assert!(!err.contains("is not defined"), "{err}");
    assert!(
        stdout(&out).contains("1 error in 1 stack"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn what_would_take_a_reconciler_down_is_refused_with_the_limit_named() {
    let repo = GitRepo::new();
    let deep = "${A:-".repeat(9000) + "x" + &"}".repeat(9000);
    repo.write(&[
        ("deep/compose.yml", Some(&format!("services:\n  web:\n    image: nginx\n    environment:\n      X: \"{deep}\"\n"))),
        ("huge/compose.yml", Some("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: 18446744073709551615\n")),
        ("nul/compose.yml", Some("services:\n  web:\n    image: nginx\n\0  db:\n    image: [\n")),
        ("nest/compose.yml", Some(&format!("services:\n  web:\n    image: {}{}\n", "[".repeat(300), "]".repeat(300)))),
        // 5 MiB of comments: over the size limit before any parsing.
        ("big/compose.yml", Some(&format!("services:\n  web:\n    image: nginx\n{}", "# padding padding padding padding padding padding padding pad\n".repeat(80 * 1024)))),
        // 1 MiB scalar repeated by 20 aliases: 20 MiB of text from a 1 MiB file.
        ("bomb/compose.yml", Some(&format!("x-big: &big \"{}\"\nservices:\n  web:\n    image: nginx\n    labels:\n{}", "a".repeat(1 << 20), (0..20).map(|i| format!("      l{i}: *big\n")).collect::<String>()))),
    ]);
    let out = reconciler(repo.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "deep/compose.yml:5:10: services.web.environment.X: variables nested more than 32 deep"
        ),
        "{err}"
    );
    assert!(err.contains("huge/compose.yml:5:17: services.web.deploy.replicas: expected an integer from 0 to 10000, found 18446744073709551615"), "{err}");
    assert!(
        err.contains("nul/compose.yml:4:1: invalid YAML: a NUL byte: a stack file is text"),
        "{err}"
    );
    assert!(err.contains("nest/compose.yml:3:"), "{err}");
    assert!(err.contains("nesting deeper than 128 levels"), "{err}");
    assert!(
        err.contains("big/compose.yml") && err.contains("stack files are at most 4 MiB"),
        "{err}"
    );
    assert!(
        err.contains("bomb/compose.yml") && err.contains("aliases repeat more than"),
        "{err}"
    );
}

#[test]
fn a_link_out_of_the_repo_breaks_only_its_own_stack_and_every_error_is_still_reported() {
    let repo = GitRepo::new();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), "services:\n  x:\n    image: nginx\n").unwrap();
    std::fs::create_dir_all(repo.path().join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path().join("linked/compose.yml")).unwrap();
    // A stack's .env linked out of the repo breaks that stack, not the repo.
    std::fs::create_dir_all(repo.path().join("envlinked")).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path().join("envlinked/.env")).unwrap();
    repo.write(&[
        (
            "envlinked/compose.yml",
            Some("services:\n  web:\n    image: nginx\n"),
        ),
        (
            "broken/compose.yml",
            Some("services:\n  web:\n    image: nginx\n    replicas: 2\n"),
        ),
        (
            "fine/compose.yml",
            Some(&real("voting-app-docker-stack.yml")),
        ),
    ]);
    let out = reconciler(repo.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("linked/compose.yml") && err.contains("outside the stacks repo"),
        "{err}"
    );
    assert!(
        err.contains("envlinked/.env") && err.matches("outside the stacks repo").count() >= 2,
        "{err}"
    );
    assert!(
        err.contains("broken/compose.yml:4"),
        "the other stack's error too: {err}"
    );
}

#[test]
fn a_fifo_where_a_secret_should_be_is_named_for_what_it_is() {
    let repo = GitRepo::new();
    repo.write(&[(
        "app/compose.yml",
        Some("services:\n  web:\n    image: nginx\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token\n"),
    )]);
    let fifo = repo.path().join("app/token");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = reconciler(repo.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("not a regular file (a FIFO"), "{err}");
    assert!(!err.contains("not found"), "{err}");
}

#[test]
fn a_huge_ulimit_is_an_error_that_names_the_limit() {
    let repo = GitRepo::new();
    repo.write(&[(
        "app/compose.yml",
        Some("services:\n  web:\n    image: nginx\n    ulimits:\n      nofile: 99999999999999999999999\n"),
    )]);
    let out = reconciler(repo.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("app/compose.yml:5"), "{err}");
    assert!(err.contains("ulimits.nofile"), "{err}");
    assert!(!err.contains("untagged enum"), "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `reconciler schema | head -1`: the reader goes away before the writer is done.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_ne!(out.status.code(), Some(101), "a panic's exit code");
}

/// `validate` in CI checks `reconciler.toml` too: the cluster would refuse the commit.
#[test]
fn validate_names_a_broken_reconciler_toml_by_line_and_field() {
    let repo = GitRepo::new();
    repo.write(&[
        (
            "stacks/web/compose.yml",
            Some("services:\n  web:\n    image: nginx:1.27\n"),
        ),
        (
            "reconciler.toml",
            Some(
                "[[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"https://hooks.example/x\"\n",
            ),
        ),
    ]);
    let good = repo.commit("good");
    repo.write(&[(
        "reconciler.toml",
        Some("[[notify]]\nname = \"ops\"\nkind = \"pager\"\nurl = \"https://hooks.example/x\"\n"),
    )]);
    repo.commit("bad");
    let out = reconciler(repo.path(), &["validate", "stacks"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("reconciler.toml:3"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("pager"), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 error"), "{}", stdout(&out));
    // From inside the stacks directory, and at a good commit.
    let out = reconciler(&repo.path().join("stacks"), &["validate", "--ref", &good]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = reconciler(repo.path(), &["validate", "stacks", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["config_errors"][0]
        .as_str()
        .unwrap()
        .contains("reconciler.toml:3"));
}
