//! The manifests in `deploy/` run command lines fleetmig accepts: each
//! Kubernetes container's `command` + `args` and each systemd `ExecStart=`
//! goes through fleetmig's own argument parser, and the settings they take
//! from the environment (a Secret, an EnvironmentFile) are ones fleetmig
//! reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use fleetmig::cli::{Cli, Command};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every `FLEETMIG_*` variable some flag of some command reads.
fn known_env() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let cli = Cli::command();
    for sub in cli.get_subcommands() {
        for a in sub.get_arguments() {
            if let Some(e) = a.get_env() {
                out.insert(e.to_string_lossy().to_string());
            }
        }
    }
    out
}

/// Every mapping under `y` that has `key`, depth first.
fn find<'a>(y: &'a Yaml, key: &str, out: &mut Vec<&'a Yaml>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                if k.as_str() == Some(key) {
                    out.push(v);
                }
                find(v, key, out);
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| find(v, key, out)),
        _ => {}
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .map(|s| s.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn manifest(name: &str) -> Vec<Yaml> {
    let path = deploy().join("kubernetes").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The command lines of every container in `name`, parsed.
fn containers(name: &str) -> Vec<(Cli, Vec<String>)> {
    let docs = manifest(name);
    let mut found = Vec::new();
    for d in &docs {
        find(d, "containers", &mut found);
    }
    assert!(!found.is_empty(), "{name}: no containers");
    let mut out = Vec::new();
    for list in found {
        for c in list.as_vec().expect("containers is a list") {
            let mut argv = strings(&c["command"]);
            argv.extend(strings(&c["args"]));
            assert_eq!(argv.first().map(String::as_str), Some("fleetmig"), "{name}");
            let cli = Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{name}: {argv:?} is refused: {e}"));
            let mut env = Vec::new();
            for e in c["env"].as_vec().cloned().unwrap_or_default() {
                let var = e["name"].as_str().unwrap().to_string();
                assert!(
                    known_env().contains(&var),
                    "{name}: fleetmig reads no {var}"
                );
                let secret = &e["valueFrom"]["secretKeyRef"];
                if !secret.is_badvalue() {
                    assert_eq!(secret["name"].as_str(), Some("fleetmig"), "{name}: {var}");
                    env.push(secret["key"].as_str().unwrap().to_string());
                }
            }
            out.push((cli, env));
        }
    }
    out
}

#[test]
fn the_kubernetes_manifests_run_command_lines_fleetmig_accepts() {
    // the Secret they read has the keys they read
    let secret = manifest("secret.example.yaml");
    let keys: BTreeSet<String> = secret[0]["stringData"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(secret[0]["kind"].as_str(), Some("Secret"));

    let job = manifest("workers-job.yaml");
    assert_eq!(job[0]["kind"].as_str(), Some("Job"));
    assert!(job[0]["spec"]["parallelism"].as_i64().unwrap() > 1);
    let workers = containers("workers-job.yaml");
    assert_eq!(workers.len(), 1);
    match &workers[0].0.command {
        Command::Worker(_) => {}
        other => panic!("the Job's pods run {other:?}, not worker"),
    }
    for key in &workers[0].1 {
        assert!(keys.contains(key), "the Secret has no {key}");
    }
    assert!(workers[0].1.contains(&"state-url".to_string()));

    let cron = manifest("nightly-cronjob.yaml");
    assert_eq!(cron[0]["kind"].as_str(), Some("CronJob"));
    assert_eq!(
        cron[0]["spec"]["concurrencyPolicy"].as_str(),
        Some("Forbid")
    );
    let nightly = containers("nightly-cronjob.yaml");
    assert_eq!(nightly.len(), 1);
    match &nightly[0].0.command {
        Command::Sync(_) => {}
        other => panic!("the CronJob runs {other:?}, not sync"),
    }
    for key in &nightly[0].1 {
        assert!(keys.contains(key), "the Secret has no {key}");
    }
}

/// `Key=value` lines of a unit file, continuation lines joined.
fn unit(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy().join("systemd").join(name)).unwrap();
    text.replace("\\\n", " ")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_systemd_units_run_command_lines_fleetmig_accepts() {
    let known = known_env();
    let example = std::fs::read_to_string(deploy().join("systemd/fleetmig.env.example")).unwrap();
    for line in example
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let var = line.split_once('=').unwrap().0;
        assert!(known.contains(var), "fleetmig reads no {var}");
    }
    let mut seen = Vec::new();
    for name in ["fleetmig-sync.service", "fleetmig-worker.service"] {
        let lines = unit(name);
        let exec: Vec<&String> = lines
            .iter()
            .filter(|(k, _)| k == "ExecStart")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(exec.len(), 1, "{name}");
        let argv: Vec<&str> = exec[0].split_whitespace().collect();
        assert!(argv[0].ends_with("/fleetmig"), "{name}: {}", argv[0]);
        let cli = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{name}: {argv:?} is refused: {e}"));
        assert!(
            lines
                .iter()
                .any(|(k, v)| k == "EnvironmentFile" && v == "/etc/fleetmig/env"),
            "{name}"
        );
        seen.push(cli.command);
    }
    assert!(matches!(seen[0], Command::Sync(_)));
    assert!(matches!(seen[1], Command::Worker(_)));
    // the timer starts the sync service
    let timer = unit("fleetmig-sync.timer");
    assert!(timer.iter().any(|(k, _)| k == "OnCalendar"));
    assert!(timer.iter().any(|(k, v)| k == "Persistent" && v == "true"));
}

#[test]
fn the_serve_deployment_needs_tokens_and_its_service_reaches_it() {
    let docs = manifest("serve.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "Service"]);
    let serve = containers("serve.yaml");
    assert_eq!(serve.len(), 1);
    let Command::Serve(a) = &serve[0].0.command else {
        panic!("the Deployment runs {:?}, not serve", serve[0].0.command);
    };
    // beyond loopback: fleetmig refuses it without tokens, so they are given
    assert!(!a.listen.ip().is_loopback());
    assert!(a.tokens_file.is_some());
    assert_eq!(serve[0].1, ["state-url"]);
    let port = a.listen.port() as i64;
    let pod = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["ports"][0]["containerPort"].as_i64(),
        Some(port)
    );
    // the tokens file is mounted where the flag says, readable by its owner only
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert!(
        a.tokens_file
            .as_ref()
            .unwrap()
            .starts_with(mount["mountPath"].as_str().unwrap())
    );
    assert_eq!(
        pod["volumes"][0]["secret"]["defaultMode"].as_i64(),
        Some(0o400)
    );
    let svc = &docs[1]["spec"];
    assert_eq!(
        svc["selector"]["app"],
        docs[0]["spec"]["selector"]["matchLabels"]["app"]
    );
    assert_eq!(svc["ports"][0]["targetPort"].as_str(), Some("http"));
}
