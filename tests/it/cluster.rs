//! The manager cluster with real processes: `init` and `join` on 127.0.x.y addresses, each
//! manager with its own data dir, mutual TLS between them, SIGKILL for failure.

use std::time::{Duration, Instant};

use reconciler::store::TaskState;
use reconciler::testing;

use crate::support::cluster::{manager, Cluster};
use crate::support::up::{compose, images, stack_name};
use crate::support::{stderr, stdout, GitRepo};

const T: Duration = Duration::from_secs(60);

fn statuses(nodes: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["hostname"].as_str().unwrap().to_string(),
                n["manager_status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn three_managers_form_a_cluster_that_every_one_of_them_describes_alike() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let cluster = Cluster::start(repo, 3, &[]);
    // From each manager: the same three nodes, one Leader, two Reachable, and `*` on the
    // manager that answered.
    let deadline = Instant::now() + T;
    for i in 0..3 {
        loop {
            let nodes = cluster.nodes(i);
            let ok = nodes.as_ref().is_some_and(|n| {
                let s = statuses(n);
                s.len() == 3
                    && s.iter().filter(|(_, st)| st == "Leader").count() == 1
                    && s.iter().filter(|(_, st)| st == "Reachable").count() == 2
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node ls on m{} never showed one Leader and two Reachable: {nodes:?}\n{}",
                i + 1,
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let table = cluster.managers[i].cli(&["node", "ls"]);
        assert!(table.status.success(), "{}", stderr(&table));
        let text = stdout(&table);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                == [
                    "ID",
                    "HOSTNAME",
                    "STATUS",
                    "AVAILABILITY",
                    "MANAGER",
                    "STATUS",
                    "ENGINE",
                    "VERSION"
                ],
            "{text}"
        );
        let me = cluster.managers[i].node_id().unwrap();
        let mine = text.lines().find(|l| l.contains(&me)).unwrap();
        assert!(mine.contains(&format!("{me} *")), "{text}");
        assert_eq!(text.matches(" *").count(), 1, "{text}");
        assert!(mine.contains(&format!("m{}", i + 1)), "{text}");
        // --format, with docker's fields: who answered, and each one's part in Raft.
        let out = cluster.managers[i].cli(&[
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Self}} {{.ManagerStatus}}",
        ]);
        let text = stdout(&out);
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("m{} true ", i + 1))),
            "{text}"
        );
        assert_eq!(text.matches(" Leader").count(), 1, "{text}");
        assert_eq!(text.matches(" Reachable").count(), 2, "{text}");
    }
}

#[test]
fn a_join_with_a_malformed_wrong_rotated_or_foreign_token_is_refused() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let cluster = Cluster::start(repo, 1, &[]);
    let good = cluster.token("manager");
    let join = |token: &str| {
        let m = manager(5, &cluster.repo);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args([
                "join",
                "--token",
                token,
                &cluster.managers[0].addr,
                "--listen-addr",
                &m.addr,
                "--repo",
                &cluster.repo.path().display().to_string(),
                "--data-dir",
                &m.dir(),
                "--listen",
                m.api.trim_start_matches("http://"),
            ])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "joined with {token}");
        assert!(
            m.node_id().is_none(),
            "a refused join leaves no cluster data dir"
        );
        stderr(&out)
    };

    let err = join("SWMTKN-1-nonsense");
    assert!(err.contains("the join token is malformed"), "{err}");

    // The right cluster's digest, a secret it never issued.
    let parts: Vec<&str> = good.split('-').collect();
    let wrong = format!("SWMTKN-1-{}-{}", parts[2], "0".repeat(25));
    let err = join(&wrong);
    assert!(err.contains("the join token is not valid"), "{err}");

    // A token that was good until it was rotated.
    let out = cluster.managers[0].cli(&["join-token", "manager", "--rotate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Successfully rotated manager join token."));
    let rotated = cluster.token("manager");
    assert_ne!(rotated, good);
    let err = join(&good);
    assert!(err.contains("the join token is not valid"), "{err}");

    // Another cluster's token names another CA: the joining node refuses this manager's
    // root before it sends anything.
    let other_repo = GitRepo::new();
    other_repo.write(&[(".keep", Some(""))]);
    other_repo.commit("empty");
    let other = Cluster::start(other_repo, 1, &[]);
    let foreign = other.token("manager");
    let err = join(&foreign);
    assert!(err.contains("does not match the join token"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_api_refuses_a_caller_without_a_certificate_or_with_another_clusters() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let (a, b) = tokio::task::spawn_blocking(move || {
        let other = GitRepo::new();
        other.write(&[(".keep", Some(""))]);
        other.commit("empty");
        (Cluster::start(repo, 1, &[]), Cluster::start(other, 1, &[]))
    })
    .await
    .unwrap();
    let addr = a.managers[0].addr.clone();

    // B's manager certificate, against A: TLS itself fails (A's listener trusts only its root).
    let out = b.managers[0].cli(&["node", "ls", "--host", &addr]);
    assert!(!out.status.success());

    // No client certificate at all: the CA may be asked for the root, nothing else.
    let root = std::fs::read_to_string(
        a.managers[0]
            .data
            .path()
            .join("node/certificates/root-ca.crt"),
    )
    .unwrap();
    let channel = reconciler::cluster::rpc::dial_with_root(&addr, &root).unwrap();
    let mut ca = reconciler::cluster::rpc::pb::ca_client::CaClient::new(channel.clone());
    let fetched = ca
        .get_root_certificate(reconciler::cluster::rpc::pb::Empty {})
        .await
        .unwrap();
    assert_eq!(fetched.into_inner().pem, root);
    let mut control = reconciler::cluster::rpc::pb::control_client::ControlClient::new(channel);
    let refused = control
        .list_nodes(reconciler::cluster::rpc::pb::Empty {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let refused = control
        .join_token(reconciler::cluster::rpc::pb::JoinTokenRequest {
            role: "manager".into(),
            rotate: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
}

fn web(image: &str, replicas: u32) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    stop_grace_period: 1s
    deploy:
      replicas: {replicas}
      update_config:
        parallelism: 1
        delay: 1s
        monitor: 1s
"#
    )
}

/// The tasks of a service, from a manager's API (none while it does not answer).
async fn tasks(
    m: &crate::support::cluster::Manager,
    service: &str,
) -> Vec<reconciler::api::views::TaskView> {
    let Ok(resp) = reqwest::Client::new()
        .get(format!("{}/api/v1/services/{service}/tasks", m.api))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return Vec::new();
    };
    resp.json().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_mid_update_is_replaced_and_the_update_finishes_once() {
    if !images().await {
        return;
    }
    let stack = stack_name("ha");
    let service = format!("{stack}_web");
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 6)),
    )]);
    let c1 = repo.commit("v1");
    let stack2 = stack.clone();
    let mut cluster = tokio::task::spawn_blocking(move || Cluster::start(repo, 3, &[&stack2]))
        .await
        .unwrap();
    let converged = |s: &reconciler::api::views::StatusView, commit: &str| {
        s.revision
            .applied
            .as_ref()
            .is_some_and(|a| a.commit == commit)
            && s.converged
    };
    // Converged on v1, seen from every manager (each runs its share of the tasks).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut all = true;
        for m in &cluster.managers {
            all &= m.status().await.is_some_and(|s| converged(&s, &c1));
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v1 never converged\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = tasks(&cluster.managers[0], &service).await;
    assert_eq!(
        before
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .count(),
        6
    );

    // v2, and the leader killed once the update is under way.
    cluster.repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(2), 6)),
    )]);
    let c2 = cluster.repo.commit("v2");
    let leader = tokio::task::block_in_place(|| cluster.leader(T));
    let deadline = Instant::now() + T;
    loop {
        let t = tasks(&cluster.managers[leader], &service).await;
        if t.iter()
            .any(|t| t.image.ends_with(":2") && t.state == TaskState::Running)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the update never started\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.managers[leader].kill();
    let killed_at = Instant::now();
    let next = tokio::task::block_in_place(|| cluster.leader(T));
    assert_ne!(next, leader);
    eprintln!("new leader after {:?}", killed_at.elapsed());
    // The killed manager comes back from its data dir: its agent runs its tasks again.
    cluster.managers[leader].up();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut all = true;
        for m in &cluster.managers {
            all &= m.status().await.is_some_and(|s| converged(&s, &c2));
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 never converged after the failover\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Six slots, one running task each, all v2; and as many containers as running tasks.
    let after = tasks(&cluster.managers[next], &service).await;
    let running: Vec<_> = after
        .iter()
        .filter(|t| t.state == TaskState::Running && t.desired_state == TaskState::Running)
        .collect();
    let mut slots: Vec<u64> = running.iter().filter_map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3, 4, 5, 6], "{running:#?}");
    assert!(
        running.iter().all(|t| t.image.ends_with(":2")),
        "{running:#?}"
    );
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={stack}"),
        ])
        .output()
        .unwrap();
    let containers = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count();
    assert_eq!(
        containers,
        6,
        "containers running for the stack\n{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manager_left_without_a_majority_says_so_and_catches_up_when_they_return() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    let c1 = repo.commit("empty");
    let mut cluster = tokio::task::spawn_blocking(move || Cluster::start(repo, 3, &[]))
        .await
        .unwrap();
    let applied = |s: &reconciler::api::views::StatusView, c: &str| {
        s.revision.applied.as_ref().is_some_and(|a| a.commit == c)
    };
    let deadline = Instant::now() + T;
    while !cluster.managers[2]
        .status()
        .await
        .is_some_and(|s| applied(&s, &c1))
    {
        assert!(Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two of three gone: the one left cannot commit, and its status says why.
    cluster.managers[0].kill();
    cluster.managers[1].kill();
    let deadline = Instant::now() + T;
    let problem = loop {
        let s = cluster.managers[2].status().await.unwrap();
        if let Some(e) = s.node.cluster_error.clone() {
            assert!(!s.converged);
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no quorum problem shown\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(problem.contains("majority of the 3 managers"), "{problem}");
    let text = cluster.managers[2].cli(&["node", "ls"]);
    assert!(
        text.status.success(),
        "node ls answers without a quorum: {}",
        stderr(&text)
    );
    // A commit pushed meanwhile is not applied by the minority...
    cluster.repo.write(&[(".keep", Some("x"))]);
    let c2 = cluster.repo.commit("while partitioned");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = cluster.managers[2].status().await.unwrap();
    assert!(applied(&s, &c1), "{s:?}");
    // ...and is, once the others are back, on all three.
    cluster.managers[0].up();
    cluster.managers[1].up();
    let deadline = Instant::now() + T;
    for m in &cluster.managers {
        while !m
            .status()
            .await
            .is_some_and(|s| applied(&s, &c2) && s.node.cluster_error.is_none())
        {
            assert!(
                Instant::now() < deadline,
                "{} never caught up\n{}",
                m.name,
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_recovers_the_last_manager_standing_with_its_data() {
    if !images().await {
        return;
    }
    let stack = stack_name("fnc");
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2)),
    )]);
    let c1 = repo.commit("v1");
    let stack2 = stack.clone();
    let mut cluster = tokio::task::spawn_blocking(move || Cluster::start(repo, 3, &[&stack2]))
        .await
        .unwrap();
    let converged = |s: &reconciler::api::views::StatusView, c: &str| {
        s.revision.applied.as_ref().is_some_and(|a| a.commit == c) && s.converged
    };
    let deadline = Instant::now() + T;
    while !cluster.managers[2]
        .status()
        .await
        .is_some_and(|s| converged(&s, &c1))
    {
        assert!(Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two managers lost for good; the third, alone, cannot commit. It is stopped and
    // started again as a new cluster of one, from its data dir.
    cluster.managers[0].kill();
    cluster.managers[1].kill();
    cluster.managers[2].kill();
    let survivor = &mut cluster.managers[2];
    let id = survivor.node_id().unwrap();
    survivor.run(&["init", "--force-new-cluster"]);
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = survivor.status().await {
            if s.node.cluster_error.is_none() && s.revision.applied.is_some() {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "{}", survivor.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The state came along: the live commit and the service.
    assert_eq!(status.revision.applied.as_ref().unwrap().commit, c1);
    assert!(status
        .services
        .iter()
        .any(|s| s.name == format!("{stack}_web")));
    assert_eq!(survivor.node_id().unwrap(), id, "the node keeps its ID");
    let nodes = cluster.nodes(2).unwrap();
    let leaders: Vec<_> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["manager_status"] == "Leader")
        .collect();
    assert_eq!(leaders.len(), 1, "{nodes}");
    assert_eq!(leaders[0]["id"], id.as_str());

    // It commits again, and a manager with a fresh data dir joins it with the old token.
    cluster.repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(2), 2)),
    )]);
    let c2 = cluster.repo.commit("v2");
    let deadline = Instant::now() + T;
    // (Applied, not converged: the tasks the lost managers ran stay theirs until node
    // failure is handled, the workers' issue.)
    while !applied_on(&cluster.managers[2], &c2).await {
        assert!(Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = {
        let out = cluster.managers[2].cli(&["join-token", "manager", "-q"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let mut fresh = manager(4, &cluster.repo);
    let (leader, listen) = (cluster.managers[2].addr.clone(), fresh.addr.clone());
    fresh.run(&["join", "--token", &token, &leader, "--listen-addr", &listen]);
    cluster.managers.push(fresh);
    tokio::task::block_in_place(|| cluster.wait_for_node(3));
    let deadline = Instant::now() + T;
    while !applied_on(&cluster.managers[3], &c2).await {
        assert!(Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Is `commit` the live one on this manager?
async fn applied_on(m: &crate::support::cluster::Manager, commit: &str) -> bool {
    let status = m.status().await;
    status
        .and_then(|s| s.revision.applied)
        .is_some_and(|a| a.commit == commit)
}

/// Poll `node ls --json` on manager `i` until `ok` holds of its (hostname, manager status)
/// pairs; the last answer.
fn wait_nodes(
    cluster: &Cluster,
    i: usize,
    what: &str,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + T;
    loop {
        if let Some(nodes) = cluster.nodes(i) {
            let s = statuses(&nodes);
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: node ls on m{} showed {s:?}\n{}",
                i + 1,
                cluster.logs()
            );
        }
        assert!(Instant::now() < deadline, "{what}\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn role_in_data_dir(m: &crate::support::cluster::Manager) -> String {
    let text = std::fs::read_to_string(std::path::Path::new(&m.dir()).join("node.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["role"].as_str().unwrap().to_string()
}

#[test]
fn demote_promote_and_rm_change_who_is_in_raft_and_who_may_call_it() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let cluster = Cluster::start(repo, 3, &[]);
    // (A manager in Raft is listed before its agent's session registers it: hostname "".)
    let three = |s: &[(String, String)]| {
        s.len() == 3
            && s.iter().all(|(h, _)| !h.is_empty())
            && s.iter().filter(|(_, st)| st == "Leader").count() == 1
            && s.iter().filter(|(_, st)| st == "Reachable").count() == 2
    };
    wait_nodes(&cluster, 0, "three managers", three);

    // A manager that is not down cannot be removed, nor can a manager at all.
    let out = cluster.managers[0].cli(&["node", "rm", "--force", "m3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("must be demoted"), "{}", stderr(&out));

    // Demote m3 (by hostname, through whichever manager m1 is): it leaves Raft, its
    // certificate is re-issued as a worker's, and with it the control API is closed to it.
    let out = cluster.managers[0].cli(&["node", "demote", "m3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("demoted"), "{}", stdout(&out));
    let s = wait_nodes(&cluster, 0, "m3 a worker", |s| {
        s.len() == 3
            && s.iter().any(|(h, st)| h == "m3" && st.is_empty())
            && s.iter()
                .filter(|(_, st)| st == "Reachable" || st == "Leader")
                .count()
                == 2
    });
    assert_eq!(
        s.iter().filter(|(_, st)| st == "Leader").count(),
        1,
        "{s:?}"
    );
    let deadline = Instant::now() + T;
    while role_in_data_dir(&cluster.managers[2]) != "worker" {
        assert!(
            Instant::now() < deadline,
            "m3 never took its worker certificate\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cluster.managers[2].cli(&["node", "ls", "--host", &cluster.managers[0].addr]);
    assert!(!out.status.success(), "a worker listed the nodes");
    assert!(stderr(&out).contains("worker"), "{}", stderr(&out));
    let out = cluster.managers[0].cli(&["node", "inspect", "m3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspect[0]["Spec"]["Role"], "worker", "{inspect}");
    assert!(inspect[0].get("ManagerStatus").is_none(), "{inspect}");

    // A worker that is up is removed only with --force.
    let out = cluster.managers[0].cli(&["node", "rm", "m3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not down"), "{}", stderr(&out));

    // Promoted again: it renews as a manager and enters Raft by itself.
    let out = cluster.managers[1].cli(&["node", "promote", "m3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_nodes(&cluster, 0, "m3 a manager again", three);
    wait_nodes(&cluster, 2, "m3 answers node ls again", three);
    assert_eq!(role_in_data_dir(&cluster.managers[2]), "manager");

    // The leader demotes itself: another is elected, and the two left run the cluster.
    let leader = cluster.leader(T);
    let name = format!("m{}", leader + 1);
    let out = cluster.managers[leader].cli(&["node", "demote", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let other = (leader + 1) % 3;
    let s = wait_nodes(&cluster, other, "a new leader of two", |s| {
        s.iter().any(|(h, st)| *h == name && st.is_empty())
            && s.iter().filter(|(_, st)| st == "Leader").count() == 1
            && s.iter().filter(|(_, st)| st == "Reachable").count() == 1
    });
    assert!(
        !s.iter().any(|(h, st)| *h == name && st == "Leader"),
        "{s:?}"
    );

    // Removed by force: gone from the list, its certificate refused by every manager.
    let out = cluster.managers[other].cli(&["node", "rm", "--force", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_nodes(&cluster, other, "the removed node gone", |s| {
        s.len() == 2 && !s.iter().any(|(h, _)| *h == name)
    });
    let out =
        cluster.managers[leader].cli(&["node", "ls", "--host", &cluster.managers[other].addr]);
    assert!(!out.status.success(), "a removed node listed the nodes");
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));

    // inspect --pretty, as docker lays it out.
    let out = cluster.managers[other].cli(&["node", "inspect", "--pretty", "self"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("Hostname:\t\tm{}", other + 1)),
        "{text}"
    );
    assert!(
        text.contains("Manager Status:") && text.contains("Raft Status:\t\tReachable"),
        "{text}"
    );
}

#[test]
fn certificates_are_renewed_before_they_expire_and_the_cluster_outlives_the_first_ones() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    // Certificates of 20 s: renewed at 10 to 16 s.
    let cluster = Cluster::start_with(repo, 2, &[], &["--cert-expiry", "20s"]);
    let cert = |i: usize| {
        std::fs::read_to_string(
            std::path::Path::new(&cluster.managers[i].dir()).join("certificates/node.crt"),
        )
        .unwrap()
    };
    let first = [cert(0), cert(1)];
    let two = |s: &[(String, String)]| {
        s.len() == 2
            && s.iter().filter(|(_, st)| st == "Leader").count() == 1
            && s.iter().filter(|(_, st)| st == "Reachable").count() == 1
    };
    wait_nodes(&cluster, 0, "two managers", two);
    // Past the first certificates' end, both managers hold new ones and still talk.
    std::thread::sleep(Duration::from_secs(22));
    for (i, first) in first.iter().enumerate() {
        assert_ne!(
            &cert(i),
            first,
            "m{} kept its first certificate\n{}",
            i + 1,
            cluster.logs()
        );
        wait_nodes(&cluster, i, "two managers after the renewal", two);
    }
    assert!(
        cluster.managers[1]
            .log()
            .contains("certificate was renewed"),
        "{}",
        cluster.logs()
    );
}

fn containers_of(node_id: &str) -> usize {
    docker_ps(&[
        "-a",
        "--filter",
        &format!("label=org.reconciler.node={node_id}"),
    ])
    .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manager_that_leaves_is_warned_then_leaves_raft_stops_and_removes_its_containers() {
    if !images().await {
        return;
    }
    let stack = stack_name("leave");
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let stack2 = stack.clone();
    tokio::task::block_in_place(move || {
        let cluster = Cluster::start(repo, 3, &[&stack2]);
        let m3 = cluster.managers[2].node_id().unwrap();
        // Committed once all three are registered, so that the scheduler sees them all.
        wait_nodes(&cluster, 0, "three managers", |s| {
            s.len() == 3 && s.iter().all(|(h, _)| !h.is_empty())
        });
        cluster.repo.write(&[(
            &compose(&stack2),
            Some(&web(&testing::images::busybox(1), 3)),
        )]);
        cluster.repo.commit("v1");
        // The three replicas spread over the three managers: m3 runs one.
        let deadline = Instant::now() + Duration::from_secs(120);
        while containers_of(&m3) == 0 {
            assert!(
                Instant::now() < deadline,
                "m3 never ran a task\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        // Without --force, a manager is told what leaving costs, and stays.
        let out = cluster.managers[2].cli(&["leave"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("Removing this node leaves 2 managers out of 3"),
            "{}",
            stderr(&out)
        );
        assert!(cluster.managers[2].node_id().is_some());

        let out = cluster.managers[2].cli(&["leave", "--force"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("left the cluster"),
            "{}",
            stdout(&out)
        );
        // Its cluster is forgotten, its containers are gone.
        assert!(
            cluster.managers[2].node_id().is_none(),
            "node.json is still there"
        );
        let deadline = Instant::now() + T;
        while containers_of(&m3) > 0 {
            assert!(
                Instant::now() < deadline,
                "m3's containers stayed\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The others run on as two managers and show it down, not a manager.
        let s = wait_nodes(&cluster, 0, "m3 down and out of Raft", |s| {
            s.len() == 3
                && s.iter().any(|(h, st)| h == "m3" && st.is_empty())
                && s.iter().filter(|(_, st)| st == "Leader").count() == 1
                && s.iter().filter(|(_, st)| st == "Reachable").count() == 1
        });
        let nodes = cluster.nodes(0).unwrap();
        let gone = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["hostname"] == "m3")
            .unwrap();
        assert_eq!(gone["status"], "Down", "{s:?}");
        // Down: removed without --force.
        let out = cluster.managers[0].cli(&["node", "rm", "m3"]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_nodes(&cluster, 0, "m3 removed", |s| s.len() == 2);
    });
}

#[test]
fn a_leader_cut_off_by_the_network_cannot_commit_says_so_and_catches_up_when_the_link_returns() {
    // Each manager in its own network namespace, joined by veth to one bridge; the cut is the
    // link going down, not a process dying.
    let net = crate::support::cluster::Namespaces::new(3);
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    let c1 = repo.commit("empty");
    let cluster = Cluster::start_in(repo, &net, 3);
    let three = |s: &[(String, String)]| {
        s.len() == 3
            && s.iter().all(|(h, _)| !h.is_empty())
            && s.iter().filter(|(_, st)| st == "Leader").count() == 1
            && s.iter().filter(|(_, st)| st == "Reachable").count() == 2
    };
    wait_nodes(&cluster, 0, "three managers", three);
    let applied = |i: usize, c: &str| cluster.applied(i, c);
    let wait = |what: &str, ok: &dyn Fn() -> bool| cluster.wait_until(what, ok);
    for i in 0..3 {
        wait("c1 applied everywhere", &|| applied(i, &c1));
    }

    let old = cluster.leader(T);
    let old_name = format!("m{}", old + 1);
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    net.set_link(old, false);

    // The majority elects one of its own and sees the old leader unreachable.
    wait_nodes(
        &cluster,
        others[0],
        "a new leader on the majority side",
        |s| {
            s.iter().any(|(h, st)| st == "Leader" && *h != old_name)
                && s.iter()
                    .any(|(h, st)| *h == old_name && st == "Unreachable")
        },
    );
    // The manager cut off says it has no quorum.
    let problem = {
        let deadline = Instant::now() + T;
        loop {
            if let Some(e) = cluster.managers[old]
                .status_inside()
                .and_then(|s| s.node.cluster_error)
            {
                break e;
            }
            assert!(
                Instant::now() < deadline,
                "no quorum problem shown\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(problem.contains("majority of the 3 managers"), "{problem}");

    // A commit pushed meanwhile: the majority applies it, the minority cannot.
    cluster.repo.write(&[(".keep", Some("x"))]);
    let c2 = cluster.repo.commit("while cut off");
    for &i in &others {
        wait("c2 applied by the majority", &|| applied(i, &c2));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        applied(old, &c1),
        "the cut-off manager applied a commit alone"
    );

    // The link returns: it follows the new leader and catches up.
    net.set_link(old, true);
    wait("the old leader caught up", &|| {
        cluster.managers[old].status_inside().is_some_and(|s| {
            s.revision.applied.as_ref().is_some_and(|a| a.commit == c2)
                && s.node.cluster_error.is_none()
        })
    });
    let s = wait_nodes(&cluster, old, "three again", three);
    assert!(
        !s.iter().any(|(h, st)| *h == old_name && st == "Leader"),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_sent_to_a_follower_makes_the_leader_apply_the_commit_at_once() {
    // A remote repository (smart HTTP, no file events) and an hour between polls: only the
    // sync can bring the new commit in.
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    let c1 = repo.commit("empty");
    let Some(addr) = crate::gitops::git_http_server(repo.path(), "x-access-token").await else {
        return;
    };
    let url = format!("http://{addr}/.git");
    tokio::task::block_in_place(move || {
        let cluster = Cluster::start_configured(repo, 3, |_, m| {
            m.repo_arg = Some(url.clone());
            m.extra = vec!["--git-token".into(), crate::gitops::TOKEN.into()];
            m.poll = "1h".into();
        });
        let applied = |i: usize, c: &str| cluster.applied(i, c);
        let wait = |what: &str, ok: &dyn Fn() -> bool| cluster.wait_until(what, ok);
        for i in 0..3 {
            wait("c1 applied everywhere", &|| applied(i, &c1));
        }
        cluster.repo.write(&[(".keep", Some("x"))]);
        let c2 = cluster.repo.commit("v2");
        let follower = (cluster.leader(T) + 1) % 3;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["sync", "--server", &cluster.managers[follower].api])
            .args(["--data-dir", &cluster.managers[follower].dir()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let started = Instant::now();
        for i in 0..3 {
            wait(
                "c2 applied everywhere after a sync sent to a follower",
                &|| applied(i, &c2),
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    });
}

/// Is `text` anywhere in the file at `path`, as the disk holds it?
fn on_disk(path: &std::path::Path, text: &str) -> bool {
    std::fs::read(path)
        .unwrap()
        .windows(text.len())
        .any(|w| w == text.as_bytes())
}

/// The node's keys are sealed on disk: the sealed file, and neither key in the clear.
fn sealed(m: &crate::support::cluster::Manager) -> bool {
    let certs = std::path::Path::new(&m.dir()).join("certificates");
    certs.join("keys.locked").exists()
        && !certs.join("node.key").exists()
        && !certs.join("data.key").exists()
}

#[test]
fn an_autolocked_manager_restarts_locked_runs_after_unlock_and_follows_a_rotated_key() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let mut cluster = Cluster::start_with(repo, 2, &[], &["--autolock"]);
    let two = |s: &[(String, String)]| {
        s.len() == 2
            && s.iter().filter(|(_, st)| st == "Leader").count() == 1
            && s.iter().filter(|(_, st)| st == "Reachable").count() == 1
    };
    wait_nodes(&cluster, 0, "two managers", two);

    // init printed the key, and unlock-key shows the same one.
    let out = cluster.managers[0].cli(&["unlock-key", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    assert!(cluster.managers[0].log().contains(&key));
    assert!(cluster.managers[0].log().contains("reconciler unlock"));

    // Both managers seal their keys (the joiner once Raft brings it the setting), and
    // nothing secret is on either disk in the clear: not the join token, not a private key.
    cluster.wait_until("both managers' keys sealed", || {
        cluster.managers.iter().all(sealed)
    });
    let token = cluster.token("manager");
    for m in &cluster.managers {
        for db in ["raft-log.redb", "raft-state.redb"] {
            let path = std::path::Path::new(&m.dir()).join(db);
            assert!(!on_disk(&path, &token), "the join token in {db}");
            assert!(!on_disk(&path, "PRIVATE KEY"), "a private key in {db}");
        }
    }
    let out = cluster.managers[0].cli_with_input(&["unlock"], &key);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not locked"), "{}", stderr(&out));

    // Restarted, m2 is locked: it answers nothing but unlock.
    cluster.managers[1].kill();
    cluster.managers[1].up();
    cluster.wait_until("m2 says it is locked", || {
        cluster.managers[1].log().contains("this manager is locked")
    });
    let out = cluster.managers[1].cli(&["node", "ls"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    let out = cluster.managers[1].cli_with_input(&["unlock"], "not a key\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("SWMKEY-1-"), "{}", stderr(&out));
    let other = format!("SWMKEY-1-{}", "0".repeat(50));
    let out = cluster.managers[1].cli_with_input(&["unlock"], &other);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid key"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&other[9..]), "{}", stderr(&out));
    let out = cluster.managers[1].cli_with_input(&["unlock"], &format!("{key}\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_nodes(&cluster, 1, "m2 back after unlock", two);

    // A rotated key reaches m2's disk; after a restart the old key no longer opens it.
    let before = std::fs::read(
        std::path::Path::new(&cluster.managers[1].dir()).join("certificates/keys.locked"),
    )
    .unwrap();
    let out = cluster.managers[1].cli(&["unlock-key", "--rotate", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let new_key = stdout(&out).trim().to_string();
    assert!(
        new_key.starts_with("SWMKEY-1-") && new_key != key,
        "{new_key}"
    );
    cluster.wait_until("m2 sealed its keys with the new key", || {
        std::fs::read(
            std::path::Path::new(&cluster.managers[1].dir()).join("certificates/keys.locked"),
        )
        .is_ok_and(|now| now != before)
    });
    cluster.managers[1].kill();
    cluster.managers[1].up();
    cluster.wait_until("m2 locked again", || {
        cluster.managers[1]
            .log()
            .matches("this manager is locked")
            .count()
            >= 2
    });
    let out = cluster.managers[1].cli_with_input(&["unlock"], &key);
    assert!(stderr(&out).contains("invalid key"), "{}", stderr(&out));
    let out = cluster.managers[1].cli_with_input(&["unlock"], &new_key);
    assert!(
        out.status.success(),
        "{:?} {} {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    wait_nodes(&cluster, 1, "m2 back after the second unlock", two);

    // Autolock off: the keys are in the clear again everywhere, and a restart needs nothing.
    let out = cluster.managers[0].cli(&["update", "--autolock=false"]);
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_until("both managers' keys in the clear", || {
        !cluster.managers.iter().any(sealed)
    });
    let out = cluster.managers[0].cli(&["unlock-key"]);
    assert!(stderr(&out).contains("autolock is off"), "{}", stderr(&out));
    // A log file is plain text: colour is for terminals only.
    assert!(!cluster.managers[0].log().contains('\x1b'));
    cluster.managers[1].kill();
    cluster.managers[1].up();
    wait_nodes(&cluster, 1, "m2 back without a key", two);
}

#[tokio::test(flavor = "multi_thread")]
async fn managers_joined_without_the_age_identity_use_the_clusters_and_no_disk_holds_it_in_the_clear(
) {
    if !images().await {
        return;
    }
    let stack = stack_name("kr");
    let service = format!("{stack}_web");
    let key = tempfile::NamedTempFile::new().unwrap();
    let (identity, recipient) = reconciler::secrets::generate_identity();
    std::fs::write(key.path(), &identity).unwrap();
    let recipients = reconciler::secrets::parse_recipients(&recipient, "test").unwrap();
    let encrypt = |text: &str| {
        String::from_utf8(reconciler::secrets::encrypt(text.as_bytes(), &recipients).unwrap())
            .unwrap()
    };
    // The task runs on m2, which joins with no identity of its own.
    let text = format!(
        "services:\n  web:\n    image: {}\n    stop_grace_period: 1s\n    secrets:\n      - token\n    deploy:\n      placement:\n        constraints: [node.hostname == m2]\n      update_config:\n        monitor: 1s\nsecrets:\n  token:\n    file: ./token.age\n",
        testing::images::busybox(1)
    );
    let secret_path = format!("{stack}/token.age");
    let repo = GitRepo::new();
    repo.write(&[
        (&compose(&stack), Some(&text)),
        (&secret_path, Some(&encrypt("first-token"))),
    ]);
    let c1 = repo.commit("v1");
    let key_path = key.path().display().to_string();
    let mut cluster = tokio::task::spawn_blocking(move || {
        Cluster::start_configured(repo, 3, |i, m| {
            if i == 0 {
                m.extra = vec!["--identity".into(), key_path.clone()];
            }
        })
    })
    .await
    .unwrap();
    cluster.stacks.push(stack.clone());
    let read_secret = |id: &str| {
        let out = std::process::Command::new("docker")
            .args(["exec", id, "cat", "/run/secrets/token"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let running_on_m2 = async |cluster: &Cluster, i: usize| {
        tasks(&cluster.managers[i], &service)
            .await
            .into_iter()
            .filter(|t| t.state == TaskState::Running)
            .filter_map(|t| t.container_id)
            .collect::<Vec<_>>()
    };

    // m2's agent opens the secret with the cluster's identity.
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        if applied_on(&cluster.managers[1], &c1).await {
            if let [id] = running_on_m2(&cluster, 1).await.as_slice() {
                if read_secret(id) == "first-token" {
                    break id.clone();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "v1 never ran on m2\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // The only manager given the identity is gone: the new leader, which never had it on its
    // disk, reads the next commit's secret with the cluster's, and m2 runs it.
    cluster.managers[0].kill();
    cluster
        .repo
        .write(&[(&secret_path, Some(&encrypt("second-token")))]);
    let c2 = cluster.repo.commit("rotate the token");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if applied_on(&cluster.managers[1], &c2).await {
            if let [id] = running_on_m2(&cluster, 1).await.as_slice() {
                if *id != first && read_secret(id) == "second-token" {
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the new leader never rolled the secret\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !cluster.logs().contains("stack blocked"),
        "{}",
        cluster.logs()
    );

    // Nowhere in the clear: not in any manager's Raft files, logs, or status.
    let secret_line = identity
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    for m in &cluster.managers {
        for db in ["raft-log.redb", "raft-state.redb"] {
            let path = std::path::Path::new(&m.dir()).join(db);
            assert!(!on_disk(&path, "AGE-SECRET-KEY-"), "{db} of {}", m.name);
        }
        assert!(!m.log().contains(&secret_line));
    }
    let status = reqwest::get(format!("{}/api/v1/status", cluster.managers[1].api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!status.contains("AGE-SECRET-KEY-"));
}

/// The running containers of `service` on the node, by the node's label (all nodes share
/// one engine).
fn running_ids(node_id: &str, service: &str) -> Vec<String> {
    docker_ps(&[
        "--filter",
        &format!("label=org.reconciler.node={node_id}"),
        "--filter",
        &format!("label=org.reconciler.service={service}"),
    ])
}

/// `docker ps -q` with these arguments: the container IDs.
fn docker_ps(args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-q"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn running_on(node_id: &str, service: &str) -> usize {
    running_ids(node_id, service).len()
}

/// `node ls --json` on the first manager: each node's (status, availability) by hostname.
fn node_states(cluster: &Cluster) -> std::collections::BTreeMap<String, (String, String)> {
    cluster
        .nodes(0)
        .map(|v| {
            v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    (
                        n["hostname"].as_str().unwrap().to_string(),
                        (
                            n["status"].as_str().unwrap().to_string(),
                            n["availability"].as_str().unwrap().to_string(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_take_tasks_spread_follow_labels_drain_and_move_when_one_dies() {
    if !images().await {
        return;
    }
    let stack = stack_name("wrk");
    let (web, zoned) = (format!("{stack}_web"), format!("{stack}_zoned"));
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let stack2 = stack.clone();
    tokio::task::block_in_place(move || {
        let mut cluster =
            Cluster::start_with(repo, 1, &[&stack2], &["--dispatcher-heartbeat", "1s"]);
        let w1 = cluster.add_worker();
        let w2 = cluster.add_worker();
        let ids: Vec<String> = cluster
            .managers
            .iter()
            .map(|m| m.node_id().unwrap())
            .collect();
        // Registered by their agents' sessions, with the names they were given.
        cluster.wait_until("m1, w1 and w2 ready", || {
            let s = node_states(&cluster);
            ["m1", "w1", "w2"]
                .iter()
                .all(|h| s.get(*h).is_some_and(|(st, _)| st == "Ready"))
        });
        let out = cluster.managers[0].cli(&["node", "update", "--label-add", "zone=b", "w2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "w2");
        let hosts = |filters: &[&str]| {
            let mut args = vec!["node", "ls", "--format", "{{.Hostname}}"];
            for f in filters {
                args.extend(["--filter", f]);
            }
            let out = cluster.managers[0].cli(&args);
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out)
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(hosts(&["role=worker"]), ["w1", "w2"]);
        assert_eq!(hosts(&["node.label=zone=b"]), ["w2"]);
        assert_eq!(hosts(&["role=manager", "name=w"]), Vec::<String>::new());
        // web starts a replacement before it stops a task, draining too.
        let text = format!(
            "{}  zoned:\n    image: {}\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.labels.zone == b]\n",
            web_text(6).replace("monitor: 1s\n", "monitor: 1s\n        order: start-first\n"),
            testing::images::busybox(1)
        );
        cluster.repo.write(&[(&compose(&stack2), Some(&text))]);
        cluster.repo.commit("v1");

        // Six replicas over three active nodes: two each; the constrained ones on w2 only.
        cluster.wait_until("web spread 2/2/2 and zoned on w2", || {
            ids.iter().all(|id| running_on(id, &web) == 2) && running_on(&ids[w2], &zoned) == 2
        });
        assert_eq!(
            running_on(&ids[0], &zoned) + running_on(&ids[w1], &zoned),
            0
        );
        let api = cluster.managers[0].api.clone();
        let out = cluster.managers[0].cli(&[
            "service",
            "ps",
            &web,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}} {{.Error}}",
            "--server",
            &api,
        ]);
        let shown = stdout(&out);
        for host in ["m1", "w1", "w2"] {
            let running = shown
                .lines()
                .filter(|l| l.starts_with(&format!("{host} running")))
                .count();
            assert_eq!(running, 2, "service ps: {shown}");
        }
        let out = cluster.managers[0].cli(&[
            "node",
            "ps",
            "w2",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}}",
            "--server",
            &api,
        ]);
        let shown = stdout(&out);
        assert_eq!(
            shown.matches(&format!("{zoned}.")).count(),
            2,
            "node ps: {shown}"
        );
        assert_eq!(
            shown.matches(&format!("{web}.")).count(),
            2,
            "node ps: {shown}"
        );

        // A worker holds no cluster state, and its API says so instead of showing any.
        let out =
            cluster.managers[w1].cli(&["service", "ls", "--server", &cluster.managers[w1].api]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("this node is a worker"),
            "{}",
            stderr(&out)
        );

        // A worker killed: down within about three heartbeats, its tasks run elsewhere.
        let killed = Instant::now();
        cluster.managers[w1].kill();
        cluster.wait_until("w1 marked down", || {
            node_states(&cluster)
                .get("w1")
                .is_some_and(|(st, _)| st == "Down")
        });
        let down_after = killed.elapsed();
        assert!(
            down_after < Duration::from_secs(10),
            "marked down after {down_after:?} with a 1 s heartbeat"
        );
        cluster.wait_until("six web replicas on m1 and w2", || {
            running_on(&ids[0], &web) + running_on(&ids[w2], &web) == 6
        });
        // Its containers are still running: it was killed, not stopped.
        assert_eq!(running_on(&ids[w1], &web), 2);

        // Back: its stale containers are shut down, and nothing is duplicated.
        cluster.managers[w1].up();
        cluster.wait_until("w1 ready again with its old tasks stopped", || {
            node_states(&cluster)
                .get("w1")
                .is_some_and(|(st, _)| st == "Ready")
                && running_on(&ids[w1], &web) == 0
        });
        let total: usize = ids.iter().map(|id| running_on(id, &web)).sum();
        assert_eq!(total, 6);

        // Drain: w2's tasks move to the others in web's update order (start-first: never
        // fewer than six running); the constrained ones have nowhere to go.
        let out = cluster.managers[0].cli(&["node", "update", "--availability", "drain", "w2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let fewest = std::cell::Cell::new(usize::MAX);
        cluster.wait_until("w2 drained", || {
            // One listing for all nodes, so that a task moving between two reads is not lost.
            let total = docker_ps(&["--filter", &format!("label=org.reconciler.service={web}")]);
            fewest.set(fewest.get().min(total.len()));
            running_on(&ids[w2], &web) == 0
                && running_on(&ids[0], &web) + running_on(&ids[w1], &web) == 6
                && running_on(&ids[w2], &zoned) == 0
        });
        assert!(
            fewest.get() >= 6,
            "web ran {} tasks at one point of the drain: start-first was not kept",
            fewest.get()
        );
        assert_eq!(node_states(&cluster)["w2"].1, "Drain");
        let out = cluster.managers[0].cli(&["service", "ps", &zoned, "--server", &api]);
        assert!(
            stdout(&out).contains("no suitable node"),
            "{}",
            stdout(&out)
        );
        // Label changes re-evaluate: the constraint now holds on m1.
        let out = cluster.managers[0].cli(&["node", "update", "--label-add", "zone=b", "m1"]);
        assert!(out.status.success(), "{}", stderr(&out));
        cluster.wait_until("zoned placed on m1", || running_on(&ids[0], &zoned) == 2);

        // A worker that leaves is down at once (not three heartbeats later), its containers gone.
        let out = cluster.managers[w1].cli(&["leave"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let left = Instant::now();
        cluster.wait_until("w1 down after leaving", || {
            node_states(&cluster)
                .get("w1")
                .is_some_and(|(st, _)| st == "Down")
        });
        assert!(
            left.elapsed() < Duration::from_millis(1500),
            "w1 was marked down {:?} after it left (a heartbeat timeout is 3 s)",
            left.elapsed()
        );
        cluster.wait_until("w1's containers removed", || containers_of(&ids[w1]) == 0);
    });
}

fn web_text(replicas: u32) -> String {
    web(&testing::images::busybox(1), replicas)
}

/// A node's credentials from its data dir, as a client of the cluster.
fn credentials_of(
    m: &crate::support::cluster::Manager,
) -> std::sync::Arc<reconciler::cluster::tls::Credentials> {
    let files = reconciler::cluster::files::NodeFiles::new(std::path::Path::new(&m.dir()));
    let reconciler::cluster::files::KeysOnDisk::Open(keys) = files.keys().unwrap() else {
        panic!("the keys are sealed");
    };
    reconciler::cluster::tls::Credentials::new(files.credentials(&keys).unwrap()).unwrap()
}

/// The first running container of `service` on the node.
fn container_on(node_id: &str, service: &str) -> Option<String> {
    running_ids(node_id, service).into_iter().next()
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_only_their_node_and_a_node_that_joins_later_takes_pending_and_global_tasks()
{
    use reconciler::cluster::rpc::{self, pb};
    if !images().await {
        return;
    }
    let stack = stack_name("wsec");
    let (one, spread, every) = (
        format!("{stack}_one"),
        format!("{stack}_spread"),
        format!("{stack}_every"),
    );
    let busybox = testing::images::busybox(1);
    let text = format!(
        "services:\n  one:\n    image: {busybox}\n    stop_grace_period: 1s\n    secrets: [token]\n    deploy:\n      placement:\n        constraints: [node.hostname == w2]\n  spread:\n    image: {busybox}\n    stop_grace_period: 1s\n    deploy:\n      replicas: 4\n      placement:\n        max_replicas_per_node: 1\n  every:\n    image: {busybox}\n    stop_grace_period: 1s\n    deploy:\n      mode: global\nsecrets:\n  token:\n    file: ./token\n"
    );
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let stack2 = stack.clone();
    let (spread2, every2, one2) = (spread.clone(), every.clone(), one.clone());
    let (cluster, ids) = tokio::task::block_in_place(move || {
        let mut cluster =
            Cluster::start_with(repo, 1, &[&stack2], &["--dispatcher-heartbeat", "1s"]);
        cluster.add_worker();
        cluster.add_worker();
        cluster.wait_until("m1, w1 and w2 ready", || {
            let s = node_states(&cluster);
            s.len() == 3 && s.values().all(|(st, _)| st == "Ready")
        });
        cluster.repo.write(&[
            (&compose(&stack2), Some(&text)),
            (&format!("{stack2}/token"), Some("s3cr3t-of-w2")),
        ]);
        cluster.repo.commit("v1");
        let ids: Vec<String> = cluster
            .managers
            .iter()
            .map(|m| m.node_id().unwrap())
            .collect();
        cluster.wait_until(
            "three of four spread, one each; every node one of every",
            || {
                ids.iter()
                    .all(|id| running_on(id, &spread2) == 1 && running_on(id, &every2) == 1)
                    && running_on(&ids[2], &one2) == 1
            },
        );
        (cluster, ids)
    });
    let api = cluster.managers[0].api.clone();
    // The fourth replica waits, and says why.
    let out = cluster.managers[0].cli(&["service", "ps", &spread, "--no-trunc", "--server", &api]);
    assert!(
        stdout(&out).contains("no suitable node (3 nodes at max_replicas_per_node)"),
        "{}",
        stdout(&out)
    );
    // The secret is on w2's task, and only there.
    let container = container_on(&ids[2], &one).unwrap();
    let out = std::process::Command::new("docker")
        .args(["exec", &container, "cat", "/run/secrets/token"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "s3cr3t-of-w2");

    // w1's certificate: a session for another node is refused...
    let w1 = credentials_of(&cluster.managers[1]);
    let addr = cluster.managers[0].addr.clone();
    let mut client =
        pb::dispatcher_client::DispatcherClient::new(rpc::dial_stream(&addr, &w1).unwrap());
    let request = |node: &str| {
        let body = serde_json::json!({"node": {
            "id": node, "hostname": "w1", "role": "worker", "availability": "active",
            "ready": true, "os": "linux", "arch": "x86_64", "nano_cpus": 1, "memory_bytes": 1
        }});
        let mut r = tonic::Request::new(pb::Json {
            json: serde_json::to_vec(&body).unwrap(),
        });
        r.metadata_mut()
            .insert("forwarded-node", ids[2].parse().unwrap());
        r
    };
    let refused = client.session(request(&ids[2])).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    // ...and its own session carries its own tasks, never w2's secret.
    // (w1's agent opens its session again when this one replaces it, and may end this one:
    // then it is opened again.)
    let mut seen = String::new();
    for _ in 0..10 {
        let mut own = request(&ids[1]);
        own.metadata_mut().remove("forwarded-node");
        let mut stream = client.session(own).await.unwrap().into_inner();
        seen.clear();
        while let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_secs(10), stream.message()).await
        {
            seen.push_str(&String::from_utf8_lossy(&m.json));
            if seen.contains("\"full\":true") {
                break;
            }
        }
        if seen.contains("\"full\":true") {
            break;
        }
    }
    assert!(seen.contains("\"full\":true"), "{seen}");
    assert!(!seen.contains(&one), "w2's task reached w1: {seen}");
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode("s3cr3t-of-w2");
    assert!(!seen.contains("s3cr3t") && !seen.contains(&encoded));

    // A fourth node: the waiting replica and a task of the global service run there.
    tokio::task::block_in_place(move || {
        let mut cluster = cluster;
        let w3 = cluster.add_worker();
        let w3_id = cluster.managers[w3].node_id().unwrap();
        cluster.wait_until("w3 runs the fourth replica and its global task", || {
            running_on(&w3_id, &spread) == 1 && running_on(&w3_id, &every) == 1
        });
        let total: usize = ids.iter().map(|id| running_on(id, &spread)).sum();
        assert_eq!(total, 3);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_keep_their_tasks_when_their_manager_dies_and_take_work_from_the_next_leader() {
    if !images().await {
        return;
    }
    let stack = stack_name("wfo");
    let service = format!("{stack}_web");
    let spec = |replicas: u32| {
        format!(
            "services:\n  web:\n    image: {}\n    stop_grace_period: 1s\n    deploy:\n      replicas: {replicas}\n      placement:\n        constraints: [node.role == worker]\n",
            testing::images::busybox(1)
        )
    };
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("empty");
    let stack2 = stack.clone();
    tokio::task::block_in_place(move || {
        let mut cluster =
            Cluster::start_with(repo, 3, &[&stack2], &["--dispatcher-heartbeat", "1s"]);
        let w1 = cluster.add_worker();
        let w2 = cluster.add_worker();
        let workers = [
            cluster.managers[w1].node_id().unwrap(),
            cluster.managers[w2].node_id().unwrap(),
        ];
        cluster.wait_until("three managers and two workers ready", || {
            let s = node_states(&cluster);
            s.len() == 5 && s.values().all(|(st, _)| st == "Ready")
        });
        cluster.repo.write(&[(&compose(&stack2), Some(&spec(2)))]);
        cluster.repo.commit("two on the workers");
        cluster.wait_until("one task on each worker", || {
            workers.iter().all(|w| running_on(w, &service) == 1)
        });

        // The manager both workers joined through, and the leader, is killed.
        let leader = cluster.leader(T);
        assert_eq!(leader, 0, "m1 made the cluster and leads it");
        cluster.managers[0].kill();
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            workers.iter().all(|w| running_on(w, &service) == 1),
            "the workers' containers keep running"
        );
        let next = cluster.leader(T);
        assert_ne!(next, 0);
        // The workers found the new leader's dispatcher: they stay ready, and new work
        // reaches them.
        cluster.repo.write(&[(&compose(&stack2), Some(&spec(4)))]);
        cluster.repo.commit("four on the workers");
        cluster.wait_until("two tasks on each worker", || {
            workers.iter().all(|w| running_on(w, &service) == 2)
        });
        let nodes = cluster.nodes(next).unwrap();
        for n in nodes["nodes"].as_array().unwrap() {
            if n["hostname"].as_str().unwrap().starts_with('w') {
                assert_eq!(n["status"], "Ready", "{n}");
            }
        }
    });
}
