//! The scheduler over simulated clusters: each filter, the ranking, preferences, placements
//! within one pass seeing each other, and properties over hundreds of random nodes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::spec::{load_stack, NoFiles, Variables};
use crate::store::{Service, TaskState};

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        hostname: format!("host-{id}"),
        role: NodeRole::Worker,
        availability: Availability::Active,
        ready: true,
        os: "linux".into(),
        arch: "x86_64".into(),
        ip: "10.0.0.1".into(),
        labels: Default::default(),
        engine_labels: Default::default(),
        nano_cpus: 4_000_000_000,
        memory_bytes: 8 << 30,
        engine_version: String::new(),
    }
}

fn labelled(id: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = node(id);
    n.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    n
}

/// A service from the `deploy:` and `ports:` a user would write.
fn service(name: &str, extra: &str) -> Service {
    let text = format!("services:\n  {name}:\n    image: app:1\n{extra}");
    let loaded = load_stack("s", "compose.yml", &text, &NoFiles, &Variables::default());
    assert!(loaded.errors().next().is_none(), "{:?}", loaded.diagnostics);
    let spec = loaded
        .spec
        .unwrap()
        .services
        .remove(&format!("s_{name}"))
        .unwrap();
    Service {
        spec,
        previous_spec: None,
        version: 1,
        revision: None,
        update: None,
        manual_rollback: false,
    }
}

/// Place `n` tasks of `svc` one after the other, as one pass does.
fn place_n(sched: &mut Scheduler<'_>, svc: &Service, n: usize) -> Vec<Result<String, String>> {
    (0..n)
        .map(|i| {
            let picked = sched.pick(&svc.spec);
            if let Ok(node) = &picked {
                let t = crate::orchestrator::new_task(
                    svc,
                    Some(i as u64 + 1),
                    node.clone(),
                    0,
                    format!("t{i}"),
                    TaskState::Running,
                    vec![],
                );
                sched.place(&t);
            }
            picked
        })
        .collect()
}

fn counts(results: &[Result<String, String>]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results.iter().flatten() {
        *m.entry(r.clone()).or_default() += 1;
    }
    m
}

#[test]
fn six_replicas_spread_two_two_two_over_three_nodes() {
    let nodes = [node("a"), node("b"), node("c")];
    let mut s = Scheduler::new(&nodes, []);
    let r = place_n(&mut s, &service("web", ""), 6);
    assert_eq!(
        counts(&r),
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)])
    );
}

#[test]
fn placements_in_one_pass_see_each_other_for_max_replicas_per_node() {
    let nodes = [node("only")];
    let svc = service(
        "web",
        "    deploy:\n      replicas: 2\n      placement:\n        max_replicas_per_node: 1\n",
    );
    let mut s = Scheduler::new(&nodes, []);
    let r = place_n(&mut s, &svc, 2);
    assert_eq!(r[0], Ok("only".into()));
    assert_eq!(
        r[1],
        Err("no suitable node (1 node at max_replicas_per_node)".into())
    );
}

#[test]
fn host_mode_ports_are_taken_per_node_and_protocol() {
    let nodes = [node("a"), node("b")];
    let tcp = service(
        "web",
        "    ports:\n      - {target: 80, published: 8080, mode: host}\n",
    );
    let udp = service(
        "dns",
        "    ports:\n      - {target: 53, published: 8080, mode: host, protocol: udp}\n",
    );
    let mut s = Scheduler::new(&nodes, []);
    let r = place_n(&mut s, &tcp, 3);
    assert_eq!(counts(&r).len(), 2, "one per node: {r:?}");
    assert_eq!(
        r[2],
        Err("no suitable node (2 nodes with a host-mode published port already in use)".into())
    );
    // The same number over udp is another port.
    assert!(s.pick(&udp.spec).is_ok());
    // Ingress ports take nothing on a node.
    let ingress = service("api", "    ports:\n      - \"8080:80\"\n");
    assert_eq!(
        place_n(&mut s, &ingress, 4)
            .iter()
            .filter(|r| r.is_ok())
            .count(),
        4
    );
}

#[test]
fn reservations_are_counted_against_what_is_left_on_the_node() {
    let mut small = node("small");
    small.memory_bytes = 1 << 30;
    small.nano_cpus = 1_000_000_000;
    let nodes = [small];
    let mem = service(
        "mem",
        "    deploy:\n      resources:\n        reservations:\n          memory: 512M\n",
    );
    let mut s = Scheduler::new(&nodes, []);
    let r = place_n(&mut s, &mem, 3);
    assert!(r[0].is_ok() && r[1].is_ok(), "{r:?}");
    assert_eq!(
        r[2],
        Err(
            "no suitable node (1 node has not enough free cpu or memory for the reservations)"
                .into()
        )
    );
    let cpu = service(
        "cpu",
        "    deploy:\n      resources:\n        reservations:\n          cpus: '0.6'\n",
    );
    let r = place_n(&mut s, &cpu, 2);
    assert!(r[0].is_ok() && r[1].is_err(), "{r:?}");
    // Exactly what is left still fits.
    let mut exact = node("exact");
    exact.nano_cpus = 1_000_000_000;
    let half = service(
        "half",
        "    deploy:\n      resources:\n        reservations:\n          cpus: '0.5'\n",
    );
    let nodes_exact = [exact];
    let mut e = Scheduler::new(&nodes_exact, []);
    let r = place_n(&mut e, &half, 3);
    assert!(r[0].is_ok() && r[1].is_ok() && r[2].is_err(), "{r:?}");
    // A task that reserves nothing fits anywhere still.
    assert!(s.pick(&service("free", "").spec).is_ok());
}

#[test]
fn a_released_task_gives_back_what_it_took() {
    let nodes = [node("only")];
    let svc = service(
        "web",
        "    deploy:\n      placement:\n        max_replicas_per_node: 1\n",
    );
    let t = crate::orchestrator::new_task(
        &svc,
        Some(1),
        "only".into(),
        0,
        "t1".into(),
        TaskState::Running,
        vec![],
    );
    let mut s = Scheduler::new(&nodes, [&t]);
    assert!(s.pick(&svc.spec).is_err(), "the live task counts");
    s.release(&t);
    assert_eq!(s.pick(&svc.spec), Ok("only".into()));
    // Tasks that are not live (stopped, or told to stop) never count.
    let mut stopped = t.clone();
    stopped.desired_state = TaskState::Shutdown;
    assert!(Scheduler::new(&nodes, [&stopped]).pick(&svc.spec).is_ok());
}

#[test]
fn constraints_labels_roles_and_platforms() {
    let mut mgr = labelled("m", &[("zone", "eu")]);
    mgr.role = NodeRole::Manager;
    let mut arm = labelled("arm", &[("zone", "us")]);
    arm.arch = "aarch64".into();
    let nodes = [mgr, arm, node("plain")];
    let s = Scheduler::new(&nodes, []);
    let pick = |c: &str| {
        s.pick(
            &service(
                "x",
                &format!("    deploy:\n      placement:\n        constraints: [\"{c}\"]\n"),
            )
            .spec,
        )
    };
    assert_eq!(pick("node.role == manager"), Ok("m".into()));
    assert_eq!(pick("node.labels.zone == us"), Ok("arm".into()));
    // A missing label is "", so != matches it.
    assert_eq!(pick("node.labels.zone != eu").map(|n| n != "m"), Ok(true));
    assert_eq!(pick("node.platform.arch == arm64"), Ok("arm".into()));
    assert_eq!(pick("node.platform.arch == aarch64"), Ok("arm".into()));
    assert!(matches!(pick("node.platform.arch == amd64"), Ok(n) if n != "arm"));
    assert_eq!(pick("node.platform.arch != x86_64"), Ok("arm".into()));
    assert_eq!(pick("node.hostname == host-plain"), Ok("plain".into()));
    assert_eq!(
        pick("node.labels.zone == mars"),
        Err("no suitable node (3 nodes do not satisfy the placement constraints)".into())
    );
}

#[test]
fn a_pending_task_says_why_with_a_count_per_filter() {
    let mut drained = node("d");
    drained.availability = Availability::Drain;
    let mut paused = node("p");
    paused.availability = Availability::Pause;
    let mut down = node("x");
    down.ready = false;
    let nodes = [drained, paused, down, labelled("l", &[("zone", "eu")])];
    let s = Scheduler::new(&nodes, []);
    let svc = service(
        "x",
        "    deploy:\n      placement:\n        constraints: [\"node.labels.zone == us\"]\n",
    );
    assert_eq!(
        s.pick(&svc.spec),
        Err("no suitable node (3 nodes not available for new tasks; 1 node does not satisfy the placement constraints)".into())
    );
    assert_eq!(
        Scheduler::new(&[], []).pick(&svc.spec),
        Err("no suitable node (no nodes in the cluster)".into())
    );
}

#[test]
fn the_fewest_tasks_of_the_service_win_before_the_fewest_in_all() {
    let nodes = [node("busy"), node("quiet")];
    let other = service("other", "");
    let web = service("web", "");
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(crate::orchestrator::new_task(
            &other,
            Some(i),
            "busy".into(),
            0,
            format!("o{i}"),
            TaskState::Running,
            vec![],
        ));
    }
    tasks.push(crate::orchestrator::new_task(
        &web,
        Some(1),
        "quiet".into(),
        0,
        "w1".into(),
        TaskState::Running,
        vec![],
    ));
    let s = Scheduler::new(&nodes, tasks.iter());
    // quiet has 1 task of web (1 in all); busy has none of web (3 in all): busy wins.
    assert_eq!(s.pick(&web.spec), Ok("busy".into()));
    // For a third service, both have none of it: the one with fewer tasks in all wins.
    assert_eq!(s.pick(&service("third", "").spec), Ok("quiet".into()));
}

#[test]
fn spread_over_engine_labels_too_with_the_label_name_as_written() {
    let with_engine = |id: &str, disk: &str| {
        let mut n = node(id);
        n.engine_labels.insert("Disk".into(), disk.into());
        n
    };
    let nodes = [
        with_engine("ssd1", "ssd"),
        with_engine("ssd2", "ssd"),
        with_engine("hdd1", "hdd"),
    ];
    // The key's prefix in any case, the label's name exactly as written.
    let svc = service(
        "db",
        "    deploy:\n      placement:\n        preferences:\n          - spread: Engine.Labels.Disk\n",
    );
    let mut s = Scheduler::new(&nodes, []);
    // By disk, half and half; by node alone it would be 2, 2 and 2 (4 on ssd).
    let c = counts(&place_n(&mut s, &svc, 6));
    let ssd = c.get("ssd1").unwrap_or(&0) + c.get("ssd2").unwrap_or(&0);
    assert_eq!((ssd, c.get("hdd1").copied().unwrap_or(0)), (3, 3), "{c:?}");
}

#[test]
fn spread_preferences_split_evenly_over_label_values_nested() {
    let nodes = [
        labelled("a1", &[("zone", "a"), ("rack", "1")]),
        labelled("a2", &[("zone", "a"), ("rack", "2")]),
        labelled("a3", &[("zone", "a"), ("rack", "2")]),
        labelled("b1", &[("zone", "b"), ("rack", "1")]),
        node("none"),
    ];
    let svc = service(
        "web",
        "    deploy:\n      placement:\n        preferences:\n          - spread: node.labels.zone\n          - spread: node.labels.rack\n",
    );
    let mut s = Scheduler::new(&nodes, []);
    let r = place_n(&mut s, &svc, 9);
    let c = counts(&r);
    let zone = |z: &str| -> usize {
        c.iter()
            .filter(|(n, _)| n.starts_with(z))
            .map(|(_, k)| k)
            .sum()
    };
    // Three groups (a, b, and the nodes without the label): three tasks each.
    assert_eq!((zone("a"), zone("b"), zone("none")), (3, 3, 3), "{c:?}");
    // Within zone a, rack 1 and rack 2 split it (2 and 1, or 1 and 2).
    let rack2 = c.get("a2").unwrap_or(&0) + c.get("a3").unwrap_or(&0);
    let rack1 = *c.get("a1").unwrap_or(&0);
    assert!(rack1.abs_diff(rack2) <= 1, "{c:?}");
}

#[test]
fn a_global_task_fits_its_node_or_says_why() {
    let mut full = node("full");
    full.memory_bytes = 100 << 20;
    let nodes = [full, node("ok")];
    let s = Scheduler::new(&nodes, []);
    let svc = service("agent", "    deploy:\n      mode: global\n      resources:\n        reservations:\n          memory: 512M\n");
    assert_eq!(s.fits(&svc.spec, "ok"), Ok(()));
    assert!(s
        .fits(&svc.spec, "full")
        .unwrap_err()
        .contains("not enough free cpu or memory"));
    assert!(s
        .fits(&svc.spec, "gone")
        .unwrap_err()
        .contains("not in the cluster"));
}

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        prop::sample::select(vec![
            Availability::Active,
            Availability::Active,
            Availability::Drain,
            Availability::Pause,
        ]),
        any::<bool>(),
        1u64..8,
        1u64..16,
    )
        .prop_map(move |(zone, availability, ready_bit, cpus, gib)| {
            let mut n = labelled(&format!("n{i:03}"), &[("zone", zone)]);
            n.availability = availability;
            n.ready = ready_bit || !i.is_multiple_of(3);
            n.nano_cpus = cpus * 1_000_000_000;
            n.memory_bytes = gib << 30;
            n
        })
}

fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    (1usize..300).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the cluster, no placement breaks a filter, and equal nodes are filled evenly.
    #[test]
    fn placements_never_break_a_filter(
        nodes in arb_nodes(),
        replicas in 1usize..400,
        max_per_node in 0u64..4,
        memory_mib in prop::sample::select(vec![0u64, 256, 1024, 4096]),
        zone in prop::sample::select(vec!["", "a", "b"]),
        host_port in any::<bool>(),
    ) {
        let mut deploy = format!("    deploy:\n      placement:\n        max_replicas_per_node: {max_per_node}\n");
        if !zone.is_empty() {
            deploy.push_str(&format!("        constraints: [\"node.labels.zone == {zone}\"]\n"));
        }
        if memory_mib > 0 {
            deploy.push_str(&format!("      resources:\n        reservations:\n          memory: {memory_mib}M\n"));
        }
        if host_port {
            deploy.push_str("    ports:\n      - {target: 80, published: 9000, mode: host}\n");
        }
        let svc = service("web", &deploy);
        let mut s = Scheduler::new(&nodes, []);
        let r = place_n(&mut s, &svc, replicas);
        let by_node = counts(&r);
        for (id, n) in &by_node {
            let node = nodes.iter().find(|x| &x.id == id).unwrap();
            prop_assert!(node.ready && node.availability == Availability::Active);
            prop_assert!(zone.is_empty() || node.labels.get("zone").map(String::as_str) == Some(zone));
            if max_per_node > 0 {
                prop_assert!(*n as u64 <= max_per_node);
            }
            if host_port {
                prop_assert!(*n <= 1);
            }
            prop_assert!(*n as u64 * (memory_mib << 20) <= node.memory_bytes);
        }
        // Nothing fits no more only when some filter says so.
        for e in r.iter().filter_map(|r| r.as_ref().err()) {
            prop_assert!(e.starts_with("no suitable node ("), "{}", e);
        }
        // Without reservations or preferences, eligible nodes differ by at most one task.
        if memory_mib == 0 && !by_node.is_empty() {
            let eligible = nodes.iter().filter(|n| {
                n.ready && n.availability == Availability::Active
                    && (zone.is_empty() || n.labels.get("zone").map(String::as_str) == Some(zone))
            }).count();
            let most = by_node.values().max().copied().unwrap_or(0);
            let least = if by_node.len() < eligible { 0 } else { by_node.values().min().copied().unwrap_or(0) };
            prop_assert!(most - least <= 1, "{by_node:?} over {eligible} eligible nodes");
        }
    }
}
