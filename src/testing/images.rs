//! Test images made on the spot, since no registry answers here: a rootfs with Debian's static
//! busybox (`/bin/busybox`, package busybox-static) imported with `docker import` semantics
//! (`POST /images/create?fromSrc=-` with a tar body and Dockerfile `changes`).
//!
//! | image | does |
//! |---|---|
//! | `reconciler-test/busybox:1`, `:2`, `:3` | serves `v<N> <hostname>` over HTTP on port 80; `/version` holds `<N>`; exits 0 on SIGTERM |
//! | `reconciler-test/exits:1` | exits at once with code 1 |
//! | `reconciler-test/unhealthy:1` | like busybox:1, with an image HEALTHCHECK that always fails (1s interval, 1 retry) |
//!
//! Every image carries `org.reconciler.test=1` and a recipe label; an image whose recipe label
//! is older than [`RECIPE`] is imported again, so changing a recipe here takes effect on the
//! next test run without anyone removing images by hand.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::TryStreamExt;

pub const BUSYBOX: &str = "reconciler-test/busybox";
pub const EXITS: &str = "reconciler-test/exits:1";
pub const UNHEALTHY: &str = "reconciler-test/unhealthy:1";
/// On every test image (and on what tests create), for clean-up by label.
pub const TEST_LABEL: &str = "org.reconciler.test";
const RECIPE_LABEL: &str = "org.reconciler.test.recipe";
/// Bump when a recipe below changes.
const RECIPE: &str = "2";
const BUSYBOX_PATH: &str = "/bin/busybox";

/// A fresh machine has no busybox: install Debian's package (tests run as root here), so the
/// README's test command needs nothing else. Failure is reported by the caller's check.
fn install_busybox() {
    eprintln!("installing busybox-static for the test images (apt-get)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-qq", "busybox-static"]) {
        let _ = apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "busybox-static"]);
    }
}

/// `reconciler-test/busybox:<tag>`.
pub fn busybox(tag: u32) -> String {
    format!("{BUSYBOX}:{tag}")
}

struct Recipe {
    reference: String,
    version: String,
    changes: Vec<String>,
}

impl Recipe {
    fn new(reference: String, version: &str, cmd: &str, extra: &[&str]) -> Self {
        let mut changes = vec![
            "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            format!("LABEL {TEST_LABEL}=1 {RECIPE_LABEL}={RECIPE} org.reconciler.test.image={reference}"),
            format!("CMD {cmd}"),
        ];
        changes.extend(extra.iter().map(|s| s.to_string()));
        Recipe {
            reference,
            version: version.to_string(),
            changes,
        }
    }
}

/// sh as PID 1 with a TERM trap: a plain `exec httpd` as PID 1 would ignore SIGTERM and every
/// stop would wait out the whole grace period.
fn serve_cmd(version: &str) -> String {
    let script = format!(
        "trap 'exit 0' TERM INT; mkdir -p /www; echo \\\"v{version} $(hostname)\\\" > /www/index.html; \
         httpd -f -p 80 -h /www & wait"
    );
    format!(r#"["sh", "-c", "{script}"]"#)
}

fn recipes() -> Vec<Recipe> {
    let mut all: Vec<Recipe> = (1..=3)
        .map(|n| Recipe::new(busybox(n), &n.to_string(), &serve_cmd(&n.to_string()), &[]))
        .collect();
    all.push(Recipe::new(
        EXITS.to_string(),
        "1",
        r#"["sh", "-c", "echo 'reconciler-test/exits: exiting with code 1' >&2; exit 1"]"#,
        &[],
    ));
    // docker import on 20.10 accepts HEALTHCHECK among its changes (checked), so the failing
    // check is the image's own, as with a real image.
    all.push(Recipe::new(
        UNHEALTHY.to_string(),
        "1",
        &serve_cmd("1"),
        &[r#"HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["false"]"#],
    ));
    all
}

/// Make every test image that is missing or stale. A fast no-op (one inspect per image) when
/// they are all there; safe to call from many test processes at once.
pub async fn ensure_test_images(docker: &Docker) -> anyhow::Result<()> {
    let recipes = recipes();
    if missing(docker, &recipes).await?.is_empty() {
        return Ok(());
    }
    // nextest runs each test in its own process: serialise imports across processes, or two of
    // them import the same tag and leave a dangling image behind.
    let _lock = lock_file().await?;
    let todo = missing(docker, &recipes).await?;
    if todo.is_empty() {
        return Ok(());
    }
    let busybox = read_busybox()?;
    let applets = applets()?;
    for recipe in todo {
        import(docker, recipe, &busybox, &applets).await?;
    }
    Ok(())
}

async fn missing<'a>(docker: &Docker, recipes: &'a [Recipe]) -> anyhow::Result<Vec<&'a Recipe>> {
    let mut todo = Vec::new();
    for recipe in recipes {
        let current = match docker.inspect_image(&recipe.reference).await {
            Ok(image) => image
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(RECIPE_LABEL).cloned())
                .is_some_and(|r| r == RECIPE),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => false,
            Err(e) => return Err(e).context(format!("inspecting image {}", recipe.reference)),
        };
        if !current {
            todo.push(recipe);
        }
    }
    Ok(todo)
}

async fn import(
    docker: &Docker,
    recipe: &Recipe,
    busybox: &[u8],
    applets: &[String],
) -> anyhow::Result<()> {
    let tar = rootfs_tar(busybox, applets, &recipe.version).context("building the test rootfs")?;
    let (repo, tag) = recipe
        .reference
        .rsplit_once(':')
        .context("test image references have a tag")?;
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(recipe.changes.clone())
        .build();
    docker
        .create_image(Some(options), Some(bollard::body_full(tar.into())), None)
        .try_for_each(|_| async { Ok(()) })
        .await
        .with_context(|| format!("importing test image {}", recipe.reference))
}

fn read_busybox() -> anyhow::Result<Vec<u8>> {
    if !Path::new(BUSYBOX_PATH).exists() {
        install_busybox();
    }
    if !Path::new(BUSYBOX_PATH).exists() {
        bail!(
            "{BUSYBOX_PATH} is missing: the test images are built from Debian's static busybox; \
             install it with `apt-get install busybox-static`"
        );
    }
    std::fs::read(BUSYBOX_PATH).with_context(|| format!("reading {BUSYBOX_PATH}"))
}

/// The applets' paths as busybox itself lists them (`usr/bin/wget`, `bin/sh`, ...).
fn applets() -> anyhow::Result<Vec<String>> {
    let out = Command::new(BUSYBOX_PATH)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {BUSYBOX_PATH} --list-full"))?;
    if !out.status.success() {
        bail!(
            "{BUSYBOX_PATH} --list-full failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = String::from_utf8(out.stdout).context("busybox applet list is not UTF-8")?;
    let mut applets: Vec<String> = list
        .lines()
        .map(str::trim)
        // Only plain relative paths: they become tar entries.
        .filter(|l| !l.is_empty() && !l.starts_with('/') && !l.contains(".."))
        .filter(|l| *l != "bin/busybox")
        .map(str::to_string)
        .collect();
    if !applets.iter().any(|a| a == "bin/sh") {
        applets.push("bin/sh".into());
    }
    Ok(applets)
}

/// A minimal root filesystem: busybox, its applets as symlinks, a passwd with an unprivileged
/// user 1000, and `/version`.
fn rootfs_tar(busybox: &[u8], applets: &[String], version: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("www", 0o755),
        ("run", 0o755),
        ("var", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
    ] {
        append_dir(&mut tar, dir, mode)?;
    }
    append_file(&mut tar, "bin/busybox", busybox, 0o755)?;
    for applet in applets {
        append_symlink(&mut tar, applet, "/bin/busybox")?;
    }
    append_file(
        &mut tar,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    )?;
    append_file(
        &mut tar,
        "etc/group",
        b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
        0o644,
    )?;
    append_file(
        &mut tar,
        "version",
        format!("{version}\n").as_bytes(),
        0o644,
    )?;
    tar.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    // Fixed, so the layer is the same bytes every time.
    h.set_mtime(1_700_000_000);
    h
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut h, path, std::io::empty())
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    content: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, content.len() as u64);
    tar.append_data(&mut h, path, content)
}

fn append_symlink(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    target: &str,
) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, path, target)
}

/// An exclusive lock on a file in the temp dir, held until the returned file is dropped.
async fn lock_file() -> anyhow::Result<File> {
    let path = std::env::temp_dir().join("reconciler-test-images.lock");
    tokio::task::spawn_blocking(move || {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await
    .context("the lock task panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_has_busybox_applets_and_version() {
        let tar = rootfs_tar(b"\x7fELF", &["bin/sh".into(), "usr/bin/wget".into()], "2").unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            names.push(entry.path().unwrap().to_string_lossy().into_owned());
        }
        for expected in [
            "bin/busybox",
            "bin/sh",
            "usr/bin/wget",
            "version",
            "tmp",
            "etc/passwd",
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == expected),
                "{expected} in {names:?}"
            );
        }
    }

    #[test]
    fn recipes_are_labelled_and_distinct() {
        let all = recipes();
        let refs: Vec<_> = all.iter().map(|r| r.reference.as_str()).collect();
        assert_eq!(
            refs,
            [
                "reconciler-test/busybox:1",
                "reconciler-test/busybox:2",
                "reconciler-test/busybox:3",
                EXITS,
                UNHEALTHY
            ]
        );
        for r in &all {
            assert!(r
                .changes
                .iter()
                .any(|c| c.contains("org.reconciler.test=1")));
        }
        assert!(all[1].changes.iter().any(|c| c.contains("v2 $(hostname)")));
    }
}
