//! The stack-file corpus: real-world files under `tests/fixtures/spec/valid/` must load without
//! errors, and every broken file under `tests/fixtures/spec/invalid/` must fail with exactly the
//! diagnostics recorded in its snapshot (`tests/it/snapshots/it__spec_corpus__invalid__*.snap`).
//! Adding a case is adding a file: run `INSTA_UPDATE=always cargo test --test it spec_corpus`,
//! then read the new snapshot line by line before keeping it.
//!
//! A property test at the end feeds arbitrary text and generated compose-like documents to the
//! loader: whatever the input, it must answer with diagnostics, never panic.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use reconciler::spec::{self, Loaded, StackFiles, Variables};

fn fixture_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(kind)
}

/// The `*.yml` files of one corpus directory, sorted by name.
fn fixtures(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir(kind))
        .expect("fixture directory exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// Files next to a fixture (secrets, configs, env files), read relative to its directory just as
/// a stack directory is read.
struct FixtureFiles(PathBuf);

impl StackFiles for FixtureFiles {
    fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, String> {
        let rel = Path::new(relative);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!("{relative}: outside the stack directory"));
        }
        match std::fs::read(self.0.join(rel)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{relative}: {e}")),
        }
    }
    fn display(&self, relative: &str) -> String {
        relative.trim_start_matches("./").to_string()
    }
}

/// The variables every fixture sees, standing in for `.env` and the process environment, so
/// that results do not depend on the machine the tests run on.
fn variables() -> Variables {
    Variables::new(BTreeMap::from(
        [
            ("TAG", "1.27"),
            ("EMPTY", ""),
            ("WEB_REPLICAS", "4"),
            ("SESSION_SECRET", "from-the-environment"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    ))
}

fn load(path: &Path) -> Loaded {
    let text = std::fs::read_to_string(path).expect("fixture is UTF-8");
    let name = path.file_name().unwrap().to_string_lossy();
    let files = FixtureFiles(path.parent().unwrap().to_path_buf());
    spec::load_stack("stack", &name, &text, &files, &variables())
}

fn render(loaded: &Loaded) -> String {
    loaded
        .diagnostics
        .iter()
        .map(|d| format!("{d}\n"))
        .collect()
}

/// Run `check` on every fixture and report every failure together, not just the first.
fn for_each_fixture(kind: &str, mut check: impl FnMut(&Path)) {
    let files = fixtures(kind);
    assert!(!files.is_empty(), "no fixtures in {kind}/");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| catch_unwind(AssertUnwindSafe(|| check(path))).is_err())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(failed.is_empty(), "{kind} fixtures failed: {failed:?}");
}

#[test]
fn valid_files_load_without_errors() {
    let mut warnings = String::new();
    for_each_fixture("valid", |path| {
        let loaded = load(path);
        let errors: Vec<String> = loaded.errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        assert!(
            loaded.spec.is_some(),
            "{}: no spec without errors",
            path.display()
        );
        warnings.push_str(&render(&loaded));
    });
    // One snapshot for the whole valid corpus: most files have no warnings at all.
    insta::assert_snapshot!("valid__warnings", warnings);
}

#[test]
fn invalid_files_fail_with_every_error_named() {
    for_each_fixture("invalid", |path| {
        let loaded = load(path);
        assert!(
            loaded.errors().next().is_some(),
            "{}: no errors",
            path.display()
        );
        assert!(
            loaded.spec.is_none(),
            "{}: a spec despite errors",
            path.display()
        );
        for d in &loaded.diagnostics {
            assert!(
                d.line >= 1 && d.col >= 1,
                "{}: no position: {d}",
                path.display()
            );
        }
        let stem = path.file_stem().unwrap().to_string_lossy();
        insta::with_settings!({
            input_file => path,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("invalid__{stem}"), render(&loaded));
        });
    });
}

/// The repository around a real-world file is not part of the corpus: every file it names
/// inside the repository is there (with stand-in content), every path it bind-mounts is one
/// git does not track, and paths that leave the repository are refused as `desired` refuses
/// them.
struct StandIns;

impl StackFiles for StandIns {
    fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, String> {
        reconciler::desired::tree::join_inside("stack", relative)
            .map(|_| Some(b"# stand-in for a file of the stack's repository\n".to_vec()))
    }
    fn display(&self, relative: &str) -> String {
        reconciler::desired::tree::join_inside("stack", relative)
            .unwrap_or_else(|_| relative.to_string())
    }
    fn entry(&self, relative: &str) -> Result<Option<spec::PathEntry>, String> {
        reconciler::desired::tree::join_inside("stack", relative).map(|_| None)
    }
}

/// Public Swarm stack files as their authors wrote them (tests/fixtures/spec/real/SOURCES.md
/// says where each comes from). With no variables set, as a fresh clone of their repository
/// sees them: every diagnostic is in one snapshot, read line by line when it changes. Most of
/// these files deploy with `docker stack deploy`; where this reader refuses one, the snapshot
/// shows why, and each refusal is a decision (see the note at the end of SOURCES.md).
#[test]
fn real_world_files_are_read_with_their_warnings_and_errors() {
    let files = fixtures("real");
    assert!(files.len() >= 40, "the real-world corpus shrank");
    let mut out = String::new();
    let mut valid = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("fixture is UTF-8");
        let name = path.file_name().unwrap().to_string_lossy();
        let stack = name.trim_end_matches(".yml").replace(['.'], "-");
        let loaded = spec::load_stack(&stack, &name, &text, &StandIns, &Variables::default());
        for d in &loaded.diagnostics {
            assert!(d.line >= 1, "{name}: no position: {d}");
        }
        valid += usize::from(loaded.spec.is_some());
        out.push_str(&render(&loaded));
    }
    out.push_str(&format!("{valid} of {} files valid\n", files.len()));
    insta::assert_snapshot!("real__diagnostics", out);
}

/// Whatever the input, the loader answers with diagnostics that point into the file: it never
/// panics, never gives a spec together with errors, and never an error without a position.
fn check_never_panics(text: &str) {
    let files = FixtureFiles(fixture_dir("valid"));
    let loaded = spec::load_stack("stack", "fuzz.yml", text, &files, &variables());
    for d in &loaded.diagnostics {
        assert!(
            d.line >= 1 && d.col >= 1,
            "no position: {d}\n--- input:\n{text}"
        );
    }
    let errors = loaded.errors().count();
    assert_eq!(
        loaded.spec.is_some(),
        errors == 0,
        "spec and errors disagree ({errors} errors)\n--- input:\n{text}"
    );
}

/// A YAML-ish document: block and flow mappings and lists of keys and values a stack file
/// holds, written out with varying indentation.
#[derive(Clone, Debug)]
enum Doc {
    Scalar(String),
    List(Vec<Doc>),
    Map(Vec<(String, Doc)>),
}

const KEYS: &[&str] = &[
    "services",
    "image",
    "deploy",
    "replicas",
    "mode",
    "ports",
    "target",
    "published",
    "protocol",
    "volumes",
    "source",
    "type",
    "read_only",
    "secrets",
    "configs",
    "file",
    "external",
    "networks",
    "aliases",
    "environment",
    "labels",
    "healthcheck",
    "test",
    "interval",
    "retries",
    "disable",
    "placement",
    "constraints",
    "preferences",
    "spread",
    "resources",
    "limits",
    "reservations",
    "cpus",
    "memory",
    "update_config",
    "rollback_config",
    "parallelism",
    "delay",
    "failure_action",
    "order",
    "restart_policy",
    "condition",
    "max_attempts",
    "ulimits",
    "soft",
    "hard",
    "tmpfs",
    "command",
    "<<",
    "x-ext",
    "web",
    "db",
    "version",
    "content",
    "name",
    "driver",
    "ipam",
    "config",
    "subnet",
    "env_file",
    "extra_hosts",
    "endpoint_mode",
    "max_replicas_per_node",
    "",
    "Ünï",
];

const SCALARS: &[&str] = &[
    "nginx",
    "3",
    "-1",
    "0",
    "0440",
    "0999",
    "1.5",
    "1e3",
    "true",
    "no",
    "~",
    "",
    "10s",
    "1m30s",
    "512M",
    "80:80",
    "127.0.0.1:8080:80/udp",
    "8000-8010:80",
    "node.role==manager",
    "node.labels.zone != a",
    "global",
    "replicated",
    "rollback",
    "start-first",
    "host",
    "${TAG}",
    "${MISSING:-2}",
    "${X:?required}",
    "$$",
    "${",
    "/data",
    "./rel:/x",
    "db:/data:ro",
    "CMD",
    "NONE",
    "A=1",
    "=x",
    "web",
    "db",
    "front",
    "external",
    "65536",
    "\u{0}",
    "é",
    "[",
];

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        4 => prop::sample::select(SCALARS).prop_map(|s| Doc::Scalar(s.to_string())),
        1 => "[ -~]{0,12}".prop_map(Doc::Scalar),
        1 => any::<i64>().prop_map(|n| Doc::Scalar(n.to_string())),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Doc::List),
            prop::collection::vec(
                (prop::sample::select(KEYS).prop_map(str::to_string), inner),
                0..6
            )
            .prop_map(Doc::Map),
        ]
    })
}

/// Write a scalar plain when YAML would read it back as the same text, quoted otherwise
/// (JSON's string syntax is YAML's double-quoted style).
fn scalar(s: &str, plain: bool) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || "._/-=$:{}~+".contains(c))
        && !s.starts_with(['-', '{', '}', ':', '~'])
        && !s.contains(": ");
    if plain && safe {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap()
    }
}

fn emit(doc: &Doc, indent: usize, flow: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    match doc {
        Doc::Scalar(s) => {
            out.push_str(&scalar(s, !flow));
            out.push('\n');
        }
        Doc::List(items) if items.is_empty() || flow => {
            out.push_str(&serde_json::to_string(&to_json(doc)).unwrap());
            out.push('\n');
        }
        Doc::Map(entries) if entries.is_empty() || flow => {
            out.push_str(&serde_json::to_string(&to_json(doc)).unwrap());
            out.push('\n');
        }
        Doc::List(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Doc::Scalar(_) => emit(item, indent + 2, false, out),
                    _ => emit(item, indent + 2, true, out),
                }
            }
        }
        Doc::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                out.push_str(&pad);
                out.push_str(&scalar(k, true));
                out.push_str(": ");
                emit(v, indent + 2, false, out);
            }
        }
    }
}

fn to_json(doc: &Doc) -> serde_json::Value {
    match doc {
        Doc::Scalar(s) => serde_json::Value::String(s.clone()),
        Doc::List(items) => items.iter().map(to_json).collect(),
        Doc::Map(entries) => entries
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// 512 cases each keeps the three properties at a few seconds; `PROPTEST_CASES` asks for more
/// when hunting.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Text made of YAML's punctuation, indentation and a few words.
    #[test]
    fn arbitrary_text_never_panics(text in "([a-z0-9 :,\\-\\[\\]{}&*!|>%@#'\"$=.\t]|\n {0,6}){0,160}") {
        check_never_panics(&text);
    }

    /// Compose-like documents: the real keys, wrong and right values, in any nesting.
    #[test]
    fn generated_stacks_never_panic(
        services in prop::collection::vec(("[a-z]{1,4}", doc()), 0..4),
        top in prop::collection::vec((prop::sample::select(KEYS), doc()), 0..4),
    ) {
        let mut text = String::from("services:\n");
        for (name, svc) in &services {
            text.push_str(&format!("  {name}: "));
            emit(svc, 4, false, &mut text);
        }
        for (key, value) in &top {
            if *key == "services" {
                continue;
            }
            text.push_str(&scalar(key, true));
            text.push_str(": ");
            emit(value, 2, false, &mut text);
        }
        check_never_panics(&text);
    }

    /// The corpus with a few characters changed: near misses of real files.
    #[test]
    fn mutated_fixtures_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(vec![' ', '\n', ':', '-', '[', '{', '"', '\'', '&', '*', '$', '#', '\t', 'x', '0'])), 1..6),
    ) {
        let mut files = fixtures("valid");
        files.extend(fixtures("invalid"));
        let mut text: Vec<char> = std::fs::read_to_string(pick.get(&files)).unwrap().chars().collect();
        for (at, op, c) in edits {
            if text.is_empty() {
                text.push(c);
                continue;
            }
            let i = at.index(text.len());
            match op {
                0 => text.insert(i, c),
                1 => { text.remove(i); }
                _ => text[i] = c,
            }
        }
        check_never_panics(&text.into_iter().collect::<String>());
    }
}
