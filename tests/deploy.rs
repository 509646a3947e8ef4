//! The deployment files: the kustomize base in `deploy/k8s` passes Kubernetes' schemas and the
//! cross-resource checks of `deploy/validate.py` (kubernetes-validate from PyPI, installed by
//! `.ci/run` from `deploy/requirements.txt`), its ConfigMap's config passes `switchyard check`, broken
//! copies of it are refused, and `deploy/Dockerfile` only copies what exists and `.dockerignore` keeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has the validator's requirements: `$SWITCHYARD_PYTHON` (set by `.ci/run`) or `.venv`.
fn python() -> PathBuf {
    let python = std::env::var_os("SWITCHYARD_PYTHON").map_or_else(|| repo().join(".venv/bin/python"), PathBuf::from);
    let ok = Command::new(&python)
        .args(["-c", "import kubernetes_validate, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import kubernetes_validate: run .ci/run (it installs deploy/requirements.txt into .venv)",
        python.display()
    );
    python
}

fn validate(dir: &Path, extract: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("deploy/validate.py")).arg(dir);
    if let Some(out) = extract {
        cmd.arg("--extract").arg(out);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run deploy/validate.py");
    (status.success(), format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr)))
}

fn copy_base() -> PathBuf {
    let dir = common::temp_dir("k8s");
    for entry in std::fs::read_dir(repo().join("deploy/k8s")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_kustomize_base_is_valid_and_its_config_passes_switchyard_check() {
    let out = common::temp_dir("k8s-config");
    let (ok, report) = validate(&repo().join("deploy/k8s"), Some(&out));
    assert!(ok, "deploy/k8s is invalid:\n{report}");
    for kind in ["Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(report.contains(&format!("{kind} switchyard")), "{kind} was validated:\n{report}");
    }
    assert!(report.contains("ServiceMonitor: schema check skipped"), "{report}");
    let check = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(out.join("switchyard.toml"))
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("OPENAI_API_KEY", "sk-test")
        .env("SWITCHYARD_ADMIN_TOKEN", "admin")
        .env("SWITCHYARD_REDIS_URL", "redis://:password@redis:6379/0")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "switchyard check refused the ConfigMap's config:\n{text}");
}

#[test]
fn broken_manifests_are_refused_with_the_reason() {
    let cases: [(&str, &str, &str, &str); 6] = [
        ("deployment.yaml", "  revisionHistoryLimit: 5", "  revisionHistoryLimit: 5\n  replica: 2", "replica"),
        ("deployment.yaml", "containerPort: 8080", "containerPort: \"eighty\"", "containerPort"),
        (
            "deployment.yaml",
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds",
        ),
        ("deployment.yaml", "path: /readyz", "path: /healthz", "readinessProbe"),
        ("servicemonitor.yaml", "port: http", "port: metrics", "ServiceMonitor"),
        ("kustomization.yaml", "  - pdb.yaml\n", "", "pdb.yaml is not listed"),
    ];
    for (file, from, to, why) in cases {
        let dir = copy_base();
        edit(&dir, file, from, to);
        let (ok, report) = validate(&dir, None);
        assert!(!ok, "{file} with {to:?} was accepted:\n{report}");
        let invalid: Vec<&str> = report.lines().filter(|l| l.starts_with("INVALID")).collect();
        assert!(invalid.iter().any(|l| l.contains(why)), "{file}: want a problem naming {why:?}, got:\n{report}");
    }
}

#[test]
fn the_dockerfile_copies_only_what_exists_and_runs_as_non_root_with_a_healthcheck() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2, "multi-stage");
    for line in lines.iter().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo().join(src).exists(), "COPY {src}: no such path in the repository");
            let top = src.split('/').next().unwrap();
            assert!(!ignored.contains(&top) && !ignored.contains(src), "COPY {src} is excluded by .dockerignore");
        }
    }
    assert!(ignored.contains(&"target"), ".dockerignore keeps target/ out of the build context");
    let user = lines.iter().rev().find(|l| l.starts_with("USER ")).expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "runs as non-root: {user}");
    assert!(
        lines.iter().any(|l| l.starts_with("HEALTHCHECK ")) && text.contains("/healthz"),
        "HEALTHCHECK on /healthz"
    );
    assert!(text.contains("--release --locked"), "a locked release build");
    assert!(text.contains(r#""/etc/switchyard/switchyard.toml""#), "config from /etc/switchyard");
}
