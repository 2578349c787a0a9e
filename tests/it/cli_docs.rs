//! Completions, man pages, colour and the documented exit codes, from the real binary.

use crate::support::{reconciler, stderr, stdout};

/// The commands a user types first; each must be completed and have its page.
const COMMANDS: &[&str] = &[
    "up",
    "init",
    "join",
    "join-token",
    "leave",
    "unlock",
    "unlock-key",
    "update",
    "node",
    "status",
    "sync",
    "service",
    "stack",
    "plan",
    "validate",
];

#[test]
fn completions_name_every_command_and_bash_parses_its_script() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = reconciler(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{}", stderr(&out));
        let script = stdout(&out);
        for c in COMMANDS {
            assert!(script.contains(c), "{shell}: no {c}");
        }
    }
    let out = reconciler(dir.path(), &["completions", "bash"]);
    let file = dir.path().join("reconciler.bash");
    std::fs::write(&file, &out.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let out = reconciler(dir.path(), &["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bash"), "{}", stderr(&out));
}

#[test]
fn man_writes_a_page_per_command_with_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man");
    let out = reconciler(dir.path(), &["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for c in COMMANDS {
        let page = pages.join(format!("reconciler-{c}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|_| panic!("no {page:?}"));
        assert!(text.contains(".TH"), "{page:?}");
    }
    let ls = std::fs::read_to_string(pages.join("reconciler-node-ls.1")).unwrap();
    assert!(ls.contains("quiet"), "{ls}");
    // Without --dir: the top page on stdout, with the exit codes.
    let out = reconciler(dir.path(), &["man"]);
    assert!(stdout(&out).contains(".TH reconciler 1"));
    assert!(stdout(&out).contains("Exit codes"));
}

#[test]
fn help_documents_the_exit_codes_and_colour() {
    let dir = tempfile::tempdir().unwrap();
    let out = reconciler(dir.path(), &["--help"]);
    // Wrapped to the width clap picks: compared word by word.
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(help.contains("Exit codes: 0 success"), "{help}");
    assert!(help.contains("2 `plan` found changes"), "{help}");
    assert!(help.contains("NO_COLOR"), "{help}");
}

/// Dynamic completion registers with the shell, and a TAB never hangs on an API that does not
/// answer: after a second it offers no names (the flags still come).
#[test]
fn dynamic_completion_registers_and_gives_up_on_a_silent_api() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .env("COMPLETE", "bash")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let script = stdout(&out);
    assert!(script.contains("complete -o nospace"), "{script}");
    assert!(script.contains("reconciler"), "{script}");

    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", "3")
        .env(
            "RECONCILER_SERVER",
            format!("http://{}", silent.local_addr().unwrap()),
        )
        .args(["--", "reconciler", "service", "ps", ""])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let words: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert!(words.iter().all(|w| w.starts_with('-')), "{words:?}");
    assert!(words.iter().any(|w| w == "--filter"), "{words:?}");
}
