//! `reconciler.toml` as people write it (and get wrong), and the events the store logs.

use super::config::{load, Kind, Value, CONFIG_FILE};
use super::event::NotifyKind;
use crate::desired::tree::WorkTree;
use crate::store::{Availability, Command, Node, NodeRole, State};

fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, WorkTree) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    let tree = WorkTree::new(dir.path());
    (dir, tree)
}

#[test]
fn no_file_means_no_targets_and_a_good_one_reads_back() {
    let (_d, t) = tree(&[]);
    assert_eq!(load(&t, "c1").unwrap(), vec![]);
    let (_d, t) = tree(&[
        (
            CONFIG_FILE,
            "[[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl_file = \"n/url.age\"\nevents = [\"node_down\"]\n\n[[notify]]\nname = \"audit\"\nkind = \"generic\"\nurl = \"https://audit.example/hook\"\nsecret = \"k\"\n",
        ),
        ("n/url.age", "x"),
    ]);
    let targets = load(&t, "c1").unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0].kind, Kind::Slack);
    assert_eq!(
        targets[0].url,
        Value::File {
            commit: "c1".into(),
            path: "n/url.age".into()
        }
    );
    assert!(targets[0].wants(NotifyKind::NodeDown));
    assert!(!targets[0].wants(NotifyKind::CommitApplied));
    assert!(
        targets[1].wants(NotifyKind::CommitApplied),
        "no filter: every event"
    );
    // A URL written in the file is never printed by Debug.
    assert!(!format!("{:?}", targets[1]).contains("audit.example"));
}

#[test]
fn mistakes_are_refused_with_the_file_line_and_field() {
    let cases: &[(&str, &str)] = &[
        ("[[notify]]\nname = \"a\"\nkind = \"pager\"\nurl = \"https://x/\"\n", "reconciler.toml:3"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x/\"\ncolour = 1\n", "colour"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\n", "url or url_file is required"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"ftp://x/\"\n", "notify[0].url: an http or https URL"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl_file = \"missing.age\"\n", "missing.age is not in the commit"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl_file = \"../x\"\n", "a path inside the repository"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x/\"\nsecret = \"k\"\n", "only a generic target signs"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x/\"\n[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://y/\"\n", "reconciler.toml:5: notify[1].name: \"a\" is named twice"),
        ("[[notify]]\nname = \"a b\"\nkind = \"slack\"\nurl = \"https://x/\"\n", "letters, digits"),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x/\"\nevents = [\"everything\"]\n", "reconciler.toml:5"),
    ];
    for (text, want) in cases {
        let (_d, t) = tree(&[(CONFIG_FILE, text)]);
        let errors = load(&t, "c1").unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{text:?}: {errors:?} lacks {want:?}"
        );
        // A URL that may be a secret is never quoted back.
        assert!(!errors.iter().any(|e| e.contains("ftp://x")), "{errors:?}");
    }
}

fn with_a_target() -> State {
    let mut s = State::default();
    let (_d, t) = tree(&[(
        CONFIG_FILE,
        "[[notify]]\nname = \"ops\"\nkind = \"generic\"\nurl = \"https://ops.example/\"\n",
    )]);
    s.notify.set_targets(load(&t, "c1").unwrap());
    s
}

#[test]
fn a_node_that_goes_down_is_news_once() {
    let mut s = with_a_target();
    s.apply(Command::UpsertNode {
        node: Node {
            id: "n1".into(),
            hostname: "w1".into(),
            role: NodeRole::Worker,
            availability: Availability::Active,
            ready: true,
            os: "linux".into(),
            arch: "x86_64".into(),
            ip: String::new(),
            labels: Default::default(),
            engine_labels: Default::default(),
            nano_cpus: 0,
            memory_bytes: 0,
            engine_version: String::new(),
        },
    })
    .unwrap();
    for _ in 0..2 {
        s.apply(Command::SetNodeReady {
            id: "n1".into(),
            ready: false,
            at: 5,
        })
        .unwrap();
    }
    let events: Vec<_> = s.notify.events.iter().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, NotifyKind::NodeDown);
    assert_eq!(events[0].node.as_deref(), Some("w1"));
    let target = s.notify.targets[0].clone();
    assert_eq!(s.notify.next_for(&target).unwrap().0.seq, 1);
    s.apply(Command::NotificationSent {
        target: "ops".into(),
        seq: 1,
    })
    .unwrap();
    assert!(s.notify.next_for(&target).is_none(), "sent: not again");
}

#[test]
fn without_targets_nothing_is_logged_and_a_new_target_starts_from_now() {
    let mut s = State::default();
    s.notify.push(NotifyKind::NodeDown, 1, Default::default());
    assert!(s.notify.events.is_empty());
    let mut s = with_a_target();
    s.notify.push(NotifyKind::NodeDown, 1, Default::default());
    let (_d, t) = tree(&[(
        CONFIG_FILE,
        "[[notify]]\nname = \"ops\"\nkind = \"generic\"\nurl = \"https://ops.example/\"\n[[notify]]\nname = \"new\"\nkind = \"slack\"\nurl = \"https://new.example/\"\n",
    )]);
    s.notify.set_targets(load(&t, "c2").unwrap());
    let new = s.notify.targets[1].clone();
    assert!(s.notify.next_for(&new).is_none(), "the past is not sent");
    let ops = s.notify.targets[0].clone();
    assert!(
        s.notify.next_for(&ops).is_some(),
        "an old target keeps its place"
    );
}
