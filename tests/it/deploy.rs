//! The container image and the compose file, checked without a Docker
//! engine (issue 14): the Dockerfile names only files that exist or that
//! its build stage makes, and its runtime stage is slim, non-root, with
//! `host` as the entrypoint; the compose file's seed job script and its
//! host service's command run for real (the real binary, local PostgreSQL,
//! a moto of their own), and its healthcheck passes.

use crate::admin::http;
use crate::common;
use crate::services;
use std::time::{Duration, Instant};

/// The Dockerfile's instructions, continuation lines joined, comments out.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (word, rest) = current.trim().split_once(' ').unwrap_or((current.trim(), ""));
                out.push((word.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_names_only_files_that_exist_and_runs_host_as_a_user() {
    let ws = common::workspace();
    let text = std::fs::read_to_string(ws.join("Dockerfile")).unwrap();
    let ignored: Vec<String> = std::fs::read_to_string(ws.join(".dockerignore"))
        .unwrap()
        .lines()
        .map(|l| l.trim().trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let steps = instructions(&text);
    let stages: Vec<&String> = steps.iter().filter(|(w, _)| w == "FROM").map(|(_, a)| a).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {stages:?}");
    assert!(stages[0].ends_with("AS build"), "{stages:?}");
    assert!(stages[1].starts_with("debian:bookworm-slim"), "a slim runtime: {stages:?}");
    let mut stage = 0;
    let mut plugins_at = None;
    let mut copied = Vec::new();
    for (word, args) in &steps {
        match word.as_str() {
            "FROM" => stage += 1,
            "COPY" => {
                let parts: Vec<&str> = args.split_whitespace().collect();
                let (from, parts) = match parts[0].strip_prefix("--from=") {
                    Some(f) => (Some(f), &parts[1..]),
                    None => (None, &parts[..]),
                };
                let (sources, dest) = parts.split_at(parts.len() - 1);
                for source in sources {
                    match from {
                        None => {
                            let first = source.trim_end_matches('/').split('/').next().unwrap();
                            assert!(ws.join(source).exists(), "COPY {source}: no such file in the repository");
                            assert!(!ignored.iter().any(|i| i == first), "COPY {source}: .dockerignore leaves it out");
                            copied.push(first.to_string());
                        }
                        Some("build") => {
                            let made = source.strip_prefix("/src/").expect("the build stage works in /src");
                            assert!(
                                ws.join(made).exists(),
                                "COPY --from=build {source}: `cargo xtask build` makes no {made} (built here first)"
                            );
                            if made.starts_with("target/plugins") {
                                plugins_at = Some(dest[0].trim_end_matches('/').to_string());
                            }
                        }
                        Some(other) => panic!("COPY --from={other}: no such stage"),
                    }
                }
            }
            "RUN" if stage == 1 => assert!(args.contains("cargo xtask build"), "the build stage builds with the xtask"),
            _ => {}
        }
    }
    let last = |w: &str| steps.iter().rev().find(|(word, _)| word == w).map(|(_, a)| a.clone()).unwrap_or_default();
    assert_eq!(last("ENTRYPOINT"), r#"["host"]"#);
    let user = last("USER");
    assert!(!user.is_empty() && user != "root" && user != "0", "runs as a non-root user: `{user}`");
    assert!(
        text.contains(&format!("useradd --system --uid 10001 --home-dir /opt/etl --shell /usr/sbin/nologin {user}"))
    );
    // What the host's source embeds from outside its crate (the WIT, the
    // SDKs that `plugins new` copies) is in the build stage too.
    for folder in embedded_folders(&ws.join("host/src")) {
        assert!(copied.contains(&folder), "host embeds files of {folder}/, which the Dockerfile does not COPY");
    }
    let plugins_at = plugins_at.expect("the plugins are copied from the build stage");
    assert!(last("ENV").contains(&format!("HOST_PLUGIN_PATH={plugins_at}")), "the host finds the plugins it ships");
}

/// The workspace's top folders (other than `host`) that `include_str!` and
/// `include_bytes!` in `dir` reach into.
fn embedded_folders(dir: &std::path::Path) -> Vec<String> {
    let ws = common::workspace().canonicalize().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(embedded_folders(&path));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for part in text.split("include_str!(\"").chain(text.split("include_bytes!(\"")).skip(1) {
            let Some(rel) = part.split('"').next() else { continue };
            let Ok(target) = path.parent().unwrap().join(rel).canonicalize() else { continue };
            if let Ok(inside) = target.strip_prefix(&ws) {
                let top = inside.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
                if top != "host" && !found.contains(&top) {
                    found.push(top);
                }
            }
        }
    }
    found
}

/// docker-compose.yml as JSON (read by PyYAML from `.venv`).
fn compose() -> serde_json::Value {
    let file = common::workspace().join("docker-compose.yml");
    let out = std::process::Command::new(services::python())
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_seed_job_and_host_service_run_as_written() {
    services::migrated().await;
    let ws = common::workspace();
    let compose = compose();
    let svc = &compose["services"];
    for name in ["postgres", "moto", "seed", "host"] {
        assert!(svc[name].is_object(), "service {name}");
    }
    assert_eq!(svc["host"]["build"]["dockerfile"], "Dockerfile");
    assert_eq!(svc["seed"]["depends_on"]["moto"]["condition"], "service_started");
    assert_eq!(svc["host"]["depends_on"]["seed"]["condition"], "service_completed_successfully");
    assert_eq!(svc["host"]["ports"][0], "127.0.0.1:9090:9090");
    // Trust-auth PostgreSQL and moto take anyone who reaches them: this
    // machine only.
    assert_eq!(svc["postgres"]["ports"][0], "127.0.0.1:5432:5432");
    assert_eq!(svc["moto"]["ports"][0], "127.0.0.1:5000:5000");
    // The pipelines' tables: the host makes only its own (`--migrate`);
    // postgres makes these when it first starts, as `migrated()` does here.
    let init = strings(&svc["postgres"]["volumes"]);
    assert!(init.contains(&"./pipelines/tables.sql:/docker-entrypoint-initdb.d/tables.sql:ro".to_string()), "{init:?}");

    // The seed job: its script, on a moto of our own.
    let endpoint = services::private_endpoint();
    let volumes = strings(&svc["seed"]["volumes"]);
    let script = volumes.iter().find_map(|v| v.strip_suffix(":/seed/seed.py:ro")).expect("the script is mounted");
    assert!(volumes.contains(&"./tests/data:/seed/data:ro".to_string()), "{volumes:?}");
    let seeded = std::process::Command::new(services::python())
        .arg(ws.join(script))
        .current_dir(&ws)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("DATA_DIR", ws.join("tests/data"))
        .output()
        .unwrap();
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));

    // The host service's command, with the real binary; the admin port
    // free here instead of 9090.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let command: Vec<String> = strings(&svc["host"]["command"])
        .into_iter()
        .map(|a| if a == "0.0.0.0:9090" { format!("0.0.0.0:{port}") } else { a })
        .collect();
    assert!(command.iter().any(|a| a == &format!("0.0.0.0:{port}")), "{command:?}");
    let env = svc["host"]["environment"].as_object().unwrap();
    let here = format!("postgres@{}", services::database_address());
    let database = env["DATABASE_URL"].as_str().unwrap().replace("postgres@postgres:5432", &here);
    let token = "deploy-test-token";
    let log = std::env::temp_dir().join(format!("{}.log", services::unique("compose-host")));
    let mut child = std::process::Command::new(crate::objects::host_binary())
        .args(&command)
        .current_dir(&ws)
        .env("DATABASE_URL", &database)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", env["AWS_REGION"].as_str().unwrap())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("HOST_ADMIN_TOKEN", token)
        .env("HOST_CACHE_DIR", common::cache_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let start = Instant::now();
    let done = loop {
        assert!(start.elapsed() < Duration::from_secs(120), "the pipelines did not load: {}", logged());
        if let Ok(a) = http(port, "GET", "/pipelines", Some(token)).await
            && a.status == 200
        {
            let list: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            let counts =
                |name: &str| list.as_array().unwrap().iter().find(|p| p["name"] == name).map(|p| p["counts"].clone());
            if let (Some(l), Some(t)) = (counts("logins"), counts("transactions"))
                && l["messages"] == 100
                && t["messages"] == 1
            {
                break (l, t);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!((done.0["rows"].as_u64(), done.0["dead_letters"].as_u64()), (Some(99), Some(1)), "{:?}", done);
    let ids = crate::run::count("SELECT count(*) FROM public.transactions WHERE id IN (1, 2, 3)").await;
    assert_eq!(ids, 3, "the sample transactions are loaded (this run or an earlier one of the same file)");

    // Its healthcheck, as compose runs it (on our port).
    let check = strings(&svc["host"]["healthcheck"]["test"]);
    assert_eq!(check[0], "CMD-SHELL");
    let shell = check[1].replace("$$", "$").replace("127.0.0.1:9090", &format!("127.0.0.1:{port}"));
    let healthy =
        std::process::Command::new("sh").args(["-c", &shell]).env("HOST_ADMIN_TOKEN", token).output().unwrap();
    assert!(healthy.status.success(), "{shell}: {}", String::from_utf8_lossy(&healthy.stderr));
    // Bound to 0.0.0.0, every route needs the token.
    assert_eq!(http(port, "GET", "/healthz", None).await.unwrap().status, 401);

    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", logged());
}
