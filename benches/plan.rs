//! Benchmark of the design target "plan of a repo with 1,000 services: well under 100 ms;
//! no-change plan of an unchanged repo near 0" (DESIGN.md, Targets).
//!
//! A stacks repo of 100 stacks with 10 services each is generated in a temporary directory and
//! committed twice with git2. The second commit changes the image tag of 100 services, scales
//! about 5% of them and re-encrypts the secret of 5 stacks. Then:
//!
//! - `load_worktree`: parse, validate and normalise the work tree (`desired::load`);
//! - `load_git`: the same from the HEAD commit through `GitTree`;
//! - `plan_changed`: `plan::plan(HEAD, HEAD~1)` on states loaded beforehand;
//! - `plan_all_changed`: the worst case, every one of the 1,000 services with a new image;
//! - `plan_unchanged`: `plan::plan(HEAD, HEAD)` (an identical clone);
//! - `end_to_end`: what `reconciler plan --ref HEAD --against-ref HEAD~1` does: find the
//!   stacks whose inputs did not change, load the others from both commits (on as many
//!   threads as there are cores), plan, render the text; `_unchanged` against HEAD itself.
//!
//! Run with `cargo bench --bench plan`; results are recorded in docs/benchmarks.md.
//!
//! - `PLAN_BENCH_REPO=/some/new/dir` generates the repo there and keeps it afterwards (to run
//!   `reconciler plan` on it by hand).
//! - `PLAN_BENCH_CLOCK=cpu` measures the time the benchmark thread spends on a CPU instead of
//!   wall-clock time (Linux only), for figures that hold on a busy shared machine.

// The binary's allocator, so that the figures are the ones `reconciler plan` gives.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, SamplingMode};
use reconciler::desired::{self, DesiredState, GitTree, LoadOptions, Loaded, WorkTree};
use reconciler::plan::{self, render, Kind};
use reconciler::secrets::{self, Recipients};

const STACKS: usize = 100;
const SERVICES_PER_STACK: usize = 10;

/// The role of service `j` of every stack; the last one is a global agent.
const ROLES: [&str; SERVICES_PER_STACK] = [
    "gateway", "api", "web", "worker", "auth", "search", "billing", "notify", "store", "agent",
];

fn stack_name(i: usize) -> String {
    format!("team{i:03}")
}

fn is_global(j: usize) -> bool {
    j == SERVICES_PER_STACK - 1
}

/// Services whose image tag changes in the second commit: exactly one per stack, a different
/// role from one stack to the next (100 services, 10%).
fn retagged(i: usize, j: usize) -> bool {
    (i * 7 + j * 3).is_multiple_of(10)
}

/// Replicated services scaled in the second commit (about 5%, never a retagged one).
fn scaled(i: usize, j: usize) -> bool {
    !is_global(j) && (i * 7 + j * 3) % 20 == 5
}

/// Stacks whose secret file changes in the second commit.
fn secret_rotated(i: usize) -> bool {
    i % 20 == 7
}

/// Services that mount the stack's secret.
fn mounts_secret(j: usize) -> bool {
    j.is_multiple_of(3)
}

/// Stacks with a `.env` file, whose images come from a registry named by interpolation.
fn has_dotenv(i: usize) -> bool {
    i % 4 == 1
}

/// The compose file of stack `i` at revision `rev` (0 or 1).
fn compose(i: usize, rev: u8) -> String {
    let team = stack_name(i);
    let zone = i % 3 + 1;
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Generated stack {team}: {SERVICES_PER_STACK} services."
    );
    y.push_str(
        r#"version: "3.8"

x-common-env: &common-env
  LOG_LEVEL: info
  LOG_FORMAT: json
  OTEL_EXPORTER_OTLP_ENDPOINT: http://otel-collector:4317
  TZ: UTC

x-healthcheck: &http-health
  test: ["CMD", "wget", "-q", "--spider", "http://localhost:8080/healthz"]
  interval: 15s
  timeout: 3s
  retries: 3
  start_period: 20s

x-deploy: &deploy-defaults
  update_config:
    parallelism: 2
    delay: 10s
    order: start-first
    failure_action: rollback
    monitor: 30s
    max_failure_ratio: 0.1
  rollback_config:
    parallelism: 0
    order: stop-first
  restart_policy:
    condition: on-failure
    delay: 5s
    max_attempts: 3
    window: 2m

services:
"#,
    );
    for (j, role) in ROLES.iter().enumerate() {
        let version = if rev == 1 && retagged(i, j) {
            format!("2.{}.0", (i + j) % 7)
        } else {
            format!("1.{}.{}", (i + j) % 9, j)
        };
        let registry = if has_dotenv(i) {
            "${REGISTRY}".to_string()
        } else {
            "registry.example.com".to_string()
        };
        let base_replicas = 1 + (i + j) % 4;
        let replicas = if rev == 1 && scaled(i, j) {
            base_replicas + 2
        } else {
            base_replicas
        };
        let port = 20_000 + i * SERVICES_PER_STACK + j;
        let _ = writeln!(y, "  {role}:");
        let _ = writeln!(y, "    image: {registry}/{team}/{role}:{version}");
        if j % 4 == 1 {
            let _ = writeln!(
                y,
                "    command: [\"/app/{role}\", \"--listen\", \":8080\", \"--metrics\", \":9090\"]"
            );
        }
        if is_global(j) {
            let _ = writeln!(
                y,
                "    ports:\n      - target: 9100\n        published: {}\n        protocol: tcp\n        mode: host",
                30_000 + i
            );
        } else {
            let _ = writeln!(y, "    ports:\n      - \"{port}:8080\"");
        }
        y.push_str("    environment:\n      <<: *common-env\n");
        let _ = writeln!(y, "      SERVICE_NAME: {role}");
        let _ = writeln!(y, "      HTTP_PORT: \"8080\"");
        let _ = writeln!(y, "      UPSTREAM: http://api:8080");
        let _ = writeln!(y, "      CACHE_TTL: ${{CACHE_TTL:-{}s}}", 30 + j * 10);
        if mounts_secret(j) {
            let _ = writeln!(y, "      DB_PASSWORD_FILE: /run/secrets/db_password");
        }
        let _ = writeln!(
            y,
            "    labels:\n      - com.example.team={team}\n      - com.example.role={role}\n      - com.example.tier={}",
            if j < 3 { "frontend" } else { "backend" }
        );
        if j % 5 == 4 {
            y.push_str(
                "    healthcheck:\n      test: [\"CMD-SHELL\", \"pgrep -x app || exit 1\"]\n      interval: 30s\n      timeout: 5s\n      retries: 5\n",
            );
        } else {
            y.push_str("    healthcheck: *http-health\n");
        }
        if j < 3 {
            y.push_str("    networks:\n      - frontend\n      - backend\n");
        } else {
            y.push_str("    networks:\n      backend:\n");
            let _ = writeln!(y, "        aliases: [{role}-{team}]");
        }
        if mounts_secret(j) {
            y.push_str("    secrets:\n      - source: db_password\n        mode: 0400\n");
        }
        y.push_str(
            "    configs:\n      - source: app_config\n        target: /etc/app/config.yml\n",
        );
        if j == 8 {
            y.push_str("    volumes:\n      - data:/var/lib/store\n");
        }
        y.push_str("    stop_grace_period: 20s\n");
        y.push_str("    deploy:\n");
        if is_global(j) {
            y.push_str("      mode: global\n");
        } else {
            let _ = writeln!(y, "      replicas: {replicas}");
        }
        if j % 3 == 2 {
            // Written out instead of merged, as some teams do.
            y.push_str(
                "      update_config:\n        parallelism: 1\n        delay: 5s\n        order: stop-first\n        failure_action: pause\n      restart_policy:\n        condition: any\n        delay: 2s\n",
            );
        } else {
            y.push_str("      <<: *deploy-defaults\n");
        }
        let _ = writeln!(
            y,
            "      labels:\n        com.example.owner: {team}\n        traefik.http.routers.{role}.rule: Host(`{role}.{team}.example.com`)"
        );
        let _ = writeln!(
            y,
            "      resources:\n        limits:\n          cpus: \"{}\"\n          memory: {}M\n        reservations:\n          cpus: \"0.10\"\n          memory: 64M",
            ["0.25", "0.50", "1.0", "2"][j % 4],
            128 << (j % 4)
        );
        y.push_str(
            "      placement:\n        constraints:\n          - node.platform.os == linux\n",
        );
        if !is_global(j) {
            let _ = writeln!(
                y,
                "          - node.role == worker\n          - node.labels.zone != z{zone}\n        preferences:\n          - spread: node.labels.zone"
            );
        }
    }
    y.push_str(
        r#"
networks:
  frontend:
    driver: overlay
    attachable: true
  backend:
    driver: overlay
    internal: true
    labels:
      com.example.scope: internal

volumes:
  data:

secrets:
  db_password:
    file: ./secrets/db_password.age

configs:
  app_config:
    file: ./configs/app.yml
"#,
    );
    y
}

fn app_config(i: usize) -> String {
    format!(
        "# Application settings for {team}\nserver:\n  listen: \":8080\"\n  read_timeout: 10s\nfeatures:\n  search: {}\n  billing: {}\nlimits:\n  requests_per_second: {}\n",
        i.is_multiple_of(2),
        i.is_multiple_of(3),
        100 + i,
        team = stack_name(i)
    )
}

fn write(root: &Path, path: &str, bytes: &[u8]) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, bytes).unwrap();
}

fn write_secret(root: &Path, i: usize, rev: u8, recipients: &Recipients) {
    let plaintext = format!("{}-db-password-rev{rev}-{i:04}", stack_name(i));
    let ciphertext = secrets::encrypt(plaintext.as_bytes(), recipients).unwrap();
    write(
        root,
        &format!("{}/secrets/db_password.age", stack_name(i)),
        &ciphertext,
    );
}

fn commit_all(repo: &git2::Repository, message: &str) {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("bench", "bench@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap();
}

/// What the second commit changes, as the plan must report it.
struct Expected {
    /// Full names of the services the plan must update.
    services: BTreeSet<String>,
    secrets: usize,
}

/// Generate the stacks repo in `root` and commit it twice.
fn generate(root: &Path) -> Expected {
    let repo = git2::Repository::init(root).unwrap();
    let (_identity, recipient) = secrets::generate_identity();
    let recipients = secrets::parse_recipients(&recipient, ".age-recipients").unwrap();
    write(root, ".age-recipients", format!("{recipient}\n").as_bytes());
    for i in 0..STACKS {
        let team = stack_name(i);
        write(
            root,
            &format!("{team}/compose.yml"),
            compose(i, 0).as_bytes(),
        );
        write(
            root,
            &format!("{team}/configs/app.yml"),
            app_config(i).as_bytes(),
        );
        if has_dotenv(i) {
            write(
                root,
                &format!("{team}/.env"),
                format!("# registry mirror for {team}\nREGISTRY=mirror.example.com:5000\nCACHE_TTL=45s\n").as_bytes(),
            );
        }
        write_secret(root, i, 0, &recipients);
    }
    commit_all(&repo, "stacks: initial");

    let mut expected = Expected {
        services: BTreeSet::new(),
        secrets: 0,
    };
    for i in 0..STACKS {
        let team = stack_name(i);
        write(
            root,
            &format!("{team}/compose.yml"),
            compose(i, 1).as_bytes(),
        );
        if secret_rotated(i) {
            write_secret(root, i, 1, &recipients);
            expected.secrets += 1;
        }
        for (j, role) in ROLES.iter().enumerate() {
            if retagged(i, j) || scaled(i, j) || (secret_rotated(i) && mounts_secret(j)) {
                expected.services.insert(format!("{team}_{role}"));
            }
        }
    }
    commit_all(&repo, "stacks: new releases, scale-ups, rotated secrets");
    expected
}

fn load_git(root: &Path, reference: &str, options: &LoadOptions<'_>) -> Loaded {
    desired::load(&GitTree::open(root, reference, "").unwrap(), options).unwrap()
}

fn check_loaded(what: &str, loaded: &Loaded) {
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{what}: errors:\n{}", errors.join("\n"));
    assert!(
        loaded.failed.is_empty(),
        "{what}: failed stacks {:?}",
        loaded.failed
    );
    assert!(
        loaded.diagnostics.is_empty(),
        "{what}: warnings in a generated repo that should be clean:\n{}",
        loaded
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let stacks = loaded.state.stacks.len();
    let services: usize = loaded.state.stacks.values().map(|s| s.services.len()).sum();
    assert_eq!(stacks, STACKS, "{what}: stacks");
    assert_eq!(services, STACKS * SERVICES_PER_STACK, "{what}: services");
}

/// Assert once, outside the timings, that what is measured is a real, complete load and plan.
fn check_fixture(root: &Path, expected: &Expected) -> (DesiredState, DesiredState) {
    let options = LoadOptions::default();
    let work = desired::load(&WorkTree::new(root), &options).unwrap();
    check_loaded("work tree", &work);
    let head = load_git(root, "HEAD", &options);
    check_loaded("HEAD", &head);
    let prev = load_git(root, "HEAD~1", &options);
    check_loaded("HEAD~1", &prev);
    let mut work_state = work.state.clone();
    work_state.revision = head.state.revision.clone();
    assert!(
        work_state == head.state,
        "the work tree and HEAD load differently"
    );
    assert!(head.state != prev.state);

    let changed = plan::plan(&head.state, &prev.state);
    let services: BTreeSet<String> = changed
        .stacks
        .iter()
        .flat_map(|s| &s.changes)
        .filter(|c| c.kind == Kind::Service)
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        services, expected.services,
        "services the changed plan updates"
    );
    let secrets = changed
        .stacks
        .iter()
        .flat_map(|s| &s.changes)
        .filter(|c| c.kind == Kind::Secret)
        .count();
    assert_eq!(
        secrets, expected.secrets,
        "secrets the changed plan updates"
    );
    let (create, update, remove) = changed.counts();
    assert_eq!((create, remove), (0, 0));
    assert_eq!(update, expected.services.len() + expected.secrets);

    let unchanged = plan::plan(&head.state, &head.state.clone());
    assert!(
        unchanged.is_empty(),
        "plan of identical states is not empty"
    );
    eprintln!(
        "fixture: {} stacks, {} services; HEAD~1..HEAD updates {} services and {} secrets in {} stacks",
        STACKS,
        STACKS * SERVICES_PER_STACK,
        expected.services.len(),
        expected.secrets,
        changed.stacks.len()
    );
    (head.state, prev.state)
}

fn benches<M: Measurement>(c: &mut Criterion<M>) {
    let temp;
    let kept;
    let root = match std::env::var_os("PLAN_BENCH_REPO") {
        Some(dir) => {
            kept = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&kept).unwrap();
            assert!(
                std::fs::read_dir(&kept).unwrap().next().is_none(),
                "PLAN_BENCH_REPO={} is not empty",
                kept.display()
            );
            kept.as_path()
        }
        None => {
            temp = tempfile::tempdir().unwrap();
            temp.path()
        }
    };
    let expected = generate(root);
    let (head, prev) = check_fixture(root, &expected);

    {
        let mut g = c.benchmark_group("load_worktree");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(7));
        g.bench_function("1000_services", |b| {
            b.iter(|| {
                desired::load(&WorkTree::new(black_box(root)), &LoadOptions::default()).unwrap()
            })
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("load_git");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(7));
        g.bench_function("1000_services", |b| {
            b.iter(|| load_git(black_box(root), "HEAD", &LoadOptions::default()))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("plan_changed");
        g.sample_size(50)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(4));
        g.bench_function("1000_services", |b| {
            b.iter(|| plan::plan(black_box(&head), black_box(&prev)))
        });
        g.finish();
    }
    {
        // Worst case: every service gets a new image (a base-image bump across the repo).
        let mut bumped = head.clone();
        for svc in bumped
            .stacks
            .values_mut()
            .flat_map(|s| s.services.values_mut())
        {
            std::sync::Arc::make_mut(&mut svc.task)
                .container
                .image
                .push_str("-rebuilt");
        }
        let all = plan::plan(&bumped, &head);
        assert_eq!(all.counts(), (0, STACKS * SERVICES_PER_STACK, 0));
        let mut g = c.benchmark_group("plan_all_changed");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(4));
        g.bench_function("1000_services", |b| {
            b.iter(|| plan::plan(black_box(&bumped), black_box(&head)))
        });
        g.finish();
    }
    {
        let same = head.clone();
        let mut g = c.benchmark_group("plan_unchanged");
        g.sample_size(50)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(4));
        g.bench_function("1000_services", |b| {
            b.iter(|| plan::plan(black_box(&head), black_box(&same)))
        });
        g.finish();
    }
    {
        // As `reconciler plan --ref HEAD --against-ref REF` does it: the stacks whose inputs
        // did not change left unread, the desired state checked for errors, the plan rendered
        // as text.
        let end_to_end = |against: &str| {
            let (head, base) = (
                GitTree::open(root, "HEAD", "").unwrap(),
                GitTree::open(root, against, "").unwrap(),
            );
            let options = LoadOptions {
                skip: desired::unchanged_stacks(&head, &base).unwrap(),
                ..LoadOptions::default()
            };
            let desired = desired::load(&head, &options).unwrap();
            assert!(!desired.has_errors());
            let observed = desired::load(&base, &options).unwrap();
            let plan = plan::plan(&desired.state, &observed.state);
            render::text(&plan)
        };
        let mut g = c.benchmark_group("end_to_end");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(10));
        g.bench_function("1000_services", |b| {
            b.iter(|| end_to_end(black_box("HEAD~1")))
        });
        g.bench_function("1000_services_unchanged", |b| {
            b.iter(|| end_to_end(black_box("HEAD")))
        });
        g.finish();
    }
}

/// On-CPU time of the calling thread, from `/proc/thread-self/schedstat` (nanoseconds). Time
/// spent waiting for a CPU that other processes hold is not counted.
struct OnCpu;

impl OnCpu {
    fn now() -> u64 {
        // The kernel brings the running thread's figure up to date only at a scheduler tick or
        // when the thread enters the scheduler: yielding makes it exact instead of up to a tick
        // (milliseconds) behind.
        std::thread::yield_now();
        let text = std::fs::read_to_string("/proc/thread-self/schedstat")
            .expect("PLAN_BENCH_CLOCK=cpu needs Linux's /proc/thread-self/schedstat");
        text.split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .expect("schedstat starts with the on-CPU time in ns")
    }
}

impl Measurement for OnCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        Self::now()
    }
    fn end(&self, start: u64) -> u64 {
        Self::now().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, ns: &u64) -> f64 {
        *ns as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, shown as wall time is.
        static NANOS: WallTime = WallTime;
        NANOS.formatter()
    }
}

// criterion_main!, with the choice of clock.
fn main() {
    if std::env::var("PLAN_BENCH_CLOCK").is_ok_and(|v| v == "cpu") {
        benches(
            &mut Criterion::default()
                .with_measurement(OnCpu)
                .configure_from_args(),
        );
    } else {
        benches(&mut Criterion::default().configure_from_args());
    }
    Criterion::default().configure_from_args().final_summary();
}
