//! docker-compose.yml sets only variables the service reads: each one under an enrichd service's
//! `environment` must be a setting of `enrichd serve` (or `RUST_LOG`). A Docker engine is not
//! available here, so the file is read, not run.

use std::collections::BTreeSet;

use clap::Args;
use enrichd::config::Config;

/// The environment variables `enrichd serve` reads.
fn known() -> BTreeSet<String> {
    let cmd = Config::augment_args(clap::Command::new("serve"));
    let mut names: BTreeSet<String> =
        cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
    names.insert("RUST_LOG".into());
    names
}

/// `(block, variable)` for every variable in an `environment:` map of the enrichd services: the
/// shared `x-enrichd…` block and every service named `enrichd…`.
fn enrichd_variables(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut top, mut block) = (String::new(), String::new());
    let mut env_indent: Option<usize> = None;
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let key = trimmed.split(':').next().unwrap_or("").trim().to_string();
        if env_indent.is_some_and(|ei| indent <= ei) {
            env_indent = None;
        }
        if env_indent.is_some() {
            let wanted = block.starts_with("x-enrichd") || (top == "services" && block.starts_with("enrichd"));
            if wanted {
                out.push((block.clone(), key));
            }
            continue;
        }
        match indent {
            0 => (top, block) = (key.clone(), key),
            2 if top == "services" => block = key,
            _ if key == "environment" => env_indent = Some(indent),
            _ => {}
        }
    }
    out
}

#[test]
fn compose_sets_only_variables_the_service_reads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docker-compose.yml");
    let yaml = std::fs::read_to_string(path).expect("docker-compose.yml");
    let vars = enrichd_variables(&yaml);
    let known = known();
    assert!(vars.len() >= 8, "the enrichd environment was found: {vars:?}");
    for must in ["DATABASE_URL", "APOLLO_API_KEY", "PUBLIC_BASE_URL", "CALLBACK_SIGNING_SECRET"] {
        assert!(vars.iter().any(|(_, v)| v == must), "{must} is set");
    }
    let unknown: Vec<_> = vars.iter().filter(|(_, v)| !known.contains(v)).collect();
    assert!(unknown.is_empty(), "docker-compose.yml sets variables enrichd does not read: {unknown:?}");
}

#[test]
fn the_reader_finds_an_unknown_variable() {
    let yaml = "x-enrichd: &e\n  environment:\n    DATABASE_URL: x\n    NOT_A_SETTING: y\nservices:\n  postgres:\n    environment:\n      POSTGRES_USER: u\n  enrichd-1: *e\n";
    let vars = enrichd_variables(yaml);
    assert_eq!(
        vars,
        vec![("x-enrichd".to_string(), "DATABASE_URL".to_string()), ("x-enrichd".into(), "NOT_A_SETTING".into())]
    );
    assert!(!known().contains("NOT_A_SETTING"));
    assert!(known().contains("APOLLO_MINUTE"));
}
