//! The deployment files, checked with the real tools, as far as a machine without a
//! container engine can check them.
//!
//! docker-compose.yml goes through Debian's docker-compose 1.29 (the real compose parser
//! and schema), the NATS config through the pinned nats-server's config check, the
//! Prometheus config and alert rules through promtool (`check config`, `check rules`, and
//! `test rules` with the synthetic series in deploy/prometheus/alerts.test.yml). The
//! Grafana dashboard's queries are parsed by promtool too, and every metric a panel or an
//! alert names must be on a live worker's or edge's `/metrics` after a few jobs: a panel
//! naming a metric nobody exports fails here, not on an operator's screen. Then the
//! Prometheus server of the same package scrapes that worker and edge: every panel's query
//! must return series, and every alert rule must evaluate without error. The tools come
//! from `scripts/install-tools`; a missing one is a failure that says how to get it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use llmq_runtime::tenants::parse_registry;
use llmq_schemas::Tier;
use llmq_tests::mock::{Fault, MockOptions, ModelBehavior};
use llmq_tests::nats::{nats_server_path, workspace_root};
use llmq_tests::stack::{Stack, chat_job, eventually};
use llmq_tests::worker::{WorkerProcess, openai_mock_provider, workspace_binary};
use serde_json::{Value, json};

const DASHBOARD: &str = "deploy/grafana/dashboards/llmq.json";
const ALERTS: &str = "deploy/prometheus/alerts.yml";

/// The services of the compose file; `mock-provider` only under the `demo` profile.
const SERVICES: [&str; 8] = [
    "edge",
    "grafana",
    "mock-provider",
    "nats-1",
    "nats-2",
    "nats-3",
    "prometheus",
    "worker",
];

/// A tool `scripts/install-tools` puts in `.tools/bin`, or a failure saying so.
fn deploy_tool(name: &str) -> PathBuf {
    let path = workspace_root().join(".tools/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools (it fetches Debian bookworm's docker-compose \
         1.29.2 and prometheus 2.42.0 packages with `apt-get download` and unpacks them into \
         .tools/deb; it needs apt-get, dpkg and /usr/bin/python3 3.11)",
        path.display()
    );
    path
}

/// Runs `command` from the repository root; its stdout, or a failure with all it printed.
fn succeed(command: &mut Command) -> String {
    let output = command
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `docker-compose -f docker-compose.yml <args>`, with none of the compose file's
/// variables inherited from this process, and `env` set.
fn compose(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(deploy_tool("docker-compose"));
    command.args(["-f", "docker-compose.yml"]).args(args);
    for var in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "LLMQ_WORKER_CONFIG",
        "LLMQ_VERSION",
        "GRAFANA_ADMIN_PASSWORD",
        "COMPOSE_PROFILES",
        "COMPOSE_FILE",
        "COMPOSE_PROJECT_NAME",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    succeed(&mut command)
}

/// `docker-compose config`'s normalized YAML cut into one text block per service.
fn service_blocks(config: &str) -> BTreeMap<String, String> {
    let mut blocks: BTreeMap<String, String> = BTreeMap::new();
    let (mut in_services, mut current) = (false, None::<String>);
    for line in config.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
        } else if let Some(name) = service_header(line).filter(|_| in_services) {
            current = Some(name.to_owned());
            blocks.insert(name.to_owned(), String::new());
        } else if let Some(block) = current.as_ref().and_then(|name| blocks.get_mut(name)) {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// `  name:` (a key two spaces in, with nothing after it).
fn service_header(line: &str) -> Option<&str> {
    let name = line.strip_prefix("  ")?.strip_suffix(':')?;
    (!name.starts_with(' ') && !name.contains(' ')).then_some(name)
}

#[test]
fn the_compose_file_parses_and_scales_workers_with_keys_from_the_environment() {
    let config = compose(&["config"], &[("OPENAI_API_KEY", "sk-from-the-shell")]);
    let services = service_blocks(&config);
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, SERVICES, "{config}");
    let worker = &services["worker"];
    for absent in ["container_name:", "ports:"] {
        assert!(
            !worker.contains(absent),
            "`--scale worker=N` needs no {absent}:\n{worker}"
        );
    }
    for present in [
        "replicas: 2",
        "LLMQ__JETSTREAM__REPLICAS: '3'",
        "OPENAI_API_KEY: sk-from-the-shell",
        "ANTHROPIC_API_KEY: ''",
        "- /etc/llmq/demo.toml",
        "http://127.0.0.1:9464/readyz",
    ] {
        assert!(
            worker.contains(present),
            "worker lacks {present:?}:\n{worker}"
        );
    }
    assert!(services["edge"].contains("http://127.0.0.1:8080/readyz"));
    assert!(services["mock-provider"].contains("profiles:\n    - demo\n"));
    for (name, block) in &services {
        assert!(
            !block.contains("profiles:") || name == "mock-provider",
            "{name} must start without a profile:\n{block}"
        );
    }
    let demo = compose(&["--profile", "demo", "config"], &[]);
    assert_eq!(service_blocks(&demo).len(), SERVICES.len());
    let real = compose(&["config"], &[("LLMQ_WORKER_CONFIG", "providers")]);
    assert!(service_blocks(&real)["worker"].contains("- /etc/llmq/providers.toml"));
}

#[test]
fn the_compose_images_are_the_versions_validated_here() {
    let config = compose(&["config"], &[]);
    let services = service_blocks(&config);
    let image = |service: &str| {
        services[service]
            .lines()
            .find_map(|line| line.trim().strip_prefix("image: "))
            .unwrap_or_else(|| panic!("{service} has no image"))
            .to_owned()
    };
    let nats = succeed(Command::new(nats_server_path()).arg("--version"));
    let nats_version = nats.trim().trim_start_matches("nats-server: v");
    assert_eq!(image("nats-1"), format!("nats:{nats_version}-alpine"));
    let promtool = succeed(Command::new(deploy_tool("promtool")).arg("--version"));
    let prom_version = promtool
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.split('+').next())
        .expect("promtool --version names its version");
    assert_eq!(
        image("prometheus"),
        format!("prom/prometheus:v{prom_version}")
    );
    let grafana = image("grafana");
    let tag = grafana.strip_prefix("grafana/grafana:").unwrap_or_default();
    assert!(
        tag.split('.').count() == 3 && tag.split('.').all(|p| p.parse::<u32>().is_ok()),
        "grafana is pinned by exact version: {grafana}"
    );
}

/// A service's `environment:` in `docker-compose config`'s output (quotes removed).
fn service_env(block: &str) -> BTreeMap<String, String> {
    block
        .lines()
        .skip_while(|line| *line != "    environment:")
        .skip(1)
        .take_while(|line| line.starts_with("      "))
        .filter_map(|line| line.trim().split_once(": "))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

/// `gateway-worker --check-keys` on a config of deploy/worker/ in the worker service's
/// environment as compose resolves it with `shell` set (`/etc/llmq` is deploy/worker here).
fn check_as_compose_runs_it(shell: &[(&str, &str)]) -> std::process::Output {
    let config = compose(&["config"], shell);
    let worker = &service_blocks(&config)["worker"];
    let file = worker
        .lines()
        .find_map(|line| line.trim().strip_prefix("- /etc/llmq/"))
        .unwrap_or_else(|| panic!("no config under /etc/llmq in\n{worker}"));
    let binary = workspace_binary("gateway-worker");
    assert!(
        binary.exists(),
        "build it first: cargo build --workspace --bins"
    );
    Command::new(binary)
        .current_dir(workspace_root())
        .args(["--check-keys", "--config"])
        .arg(format!("deploy/worker/{file}"))
        .env_clear()
        .envs(service_env(worker))
        .output()
        .unwrap()
}

#[test]
fn each_worker_config_passes_the_workers_check_in_the_environment_compose_gives_it() {
    let demo = check_as_compose_runs_it(&[]);
    let out = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "{demo:?}");
    assert!(
        out.contains("config ok") && out.contains("2 model(s)"),
        "{out}"
    );
    let keys = [
        ("LLMQ_WORKER_CONFIG", "providers"),
        ("OPENAI_API_KEY", "sk-test"),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
    ];
    let real = check_as_compose_runs_it(&keys);
    assert!(real.status.success(), "{real:?}");
    // No key in the shell: the worker refuses to start, naming the field.
    let keyless = check_as_compose_runs_it(&keys[..1]);
    assert_eq!(keyless.status.code(), Some(64), "{keyless:?}");
    let err = String::from_utf8_lossy(&keyless.stderr);
    assert!(err.contains("providers.openai.api_key_env"), "{err}");
}

/// The `uid:` of the provisioned datasource.
fn provisioned_datasource_uid() -> String {
    let path = workspace_root().join("deploy/grafana/provisioning/datasources/prometheus.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let uid = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("uid: "));
    uid.expect("the datasource has a uid").to_owned()
}

#[test]
fn every_dashboard_panel_uses_the_provisioned_datasource_and_has_its_own_id() {
    let text = std::fs::read_to_string(workspace_root().join(DASHBOARD)).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let uid = provisioned_datasource_uid();
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "id twice: {panel}"
        );
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], json!(uid), "{}", panel["title"]);
            assert!(
                !panel["targets"].as_array().unwrap().is_empty(),
                "{}",
                panel["title"]
            );
        }
    }
    assert_eq!(dashboard["uid"], "llmq");
    let compose_file = std::fs::read_to_string(workspace_root().join("docker-compose.yml"));
    let provider = workspace_root().join("deploy/grafana/provisioning/dashboards/llmq.yml");
    let path = std::fs::read_to_string(provider).unwrap();
    let path = path
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .unwrap();
    let mount = format!("./deploy/grafana/dashboards:{path}:ro");
    assert!(
        compose_file.unwrap().contains(&mount),
        "compose mounts the dashboards at {path}"
    );
}

#[test]
fn every_nats_node_accepts_the_cluster_config() {
    for node in ["nats-1", "nats-2", "nats-3"] {
        let out = succeed(
            Command::new(nats_server_path())
                .args(["-c", "deploy/nats/cluster.conf", "-t"])
                .env("NATS_SERVER_NAME", node),
        );
        assert!(out.contains("is valid") || out.is_empty(), "{out}");
    }
}

#[test]
fn the_prometheus_config_and_alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = deploy_tool("promtool");
    let config = succeed(Command::new(&promtool).args([
        "check",
        "config",
        "deploy/prometheus/prometheus.yml",
    ]));
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = succeed(Command::new(&promtool).args(["check", "rules", ALERTS]));
    assert!(rules.contains("SUCCESS: 8 rules found"), "{rules}");
    let tests = succeed(Command::new(&promtool).args([
        "test",
        "rules",
        "deploy/prometheus/alerts.test.yml",
    ]));
    assert!(tests.contains("SUCCESS"), "{tests}");
}

#[test]
fn the_dockerfile_builds_every_binary_compose_runs_from_sources_it_sends() {
    let root = workspace_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    for binary in ["gateway-worker", "submitter", "llmq-edge", "mock-provider"] {
        assert!(dockerfile.contains(&format!("--bin {binary}")), "{binary}");
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary}"
        );
    }
    for needed in [
        "FROM debian:bookworm-slim",
        "USER llmq",
        "HEALTHCHECK",
        "/readyz",
    ] {
        assert!(
            dockerfile.contains(needed),
            "the Dockerfile lacks {needed:?}"
        );
    }
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let ignored: BTreeSet<&str> = ignored.lines().map(|l| l.trim_end_matches('/')).collect();
    for source in copied_sources(&dockerfile) {
        assert!(root.join(&source).exists(), "COPY {source}: no such path");
        let top = source.split('/').next().unwrap_or_default();
        assert!(
            !ignored.contains(top),
            "COPY {source}, but .dockerignore drops it"
        );
    }
}

/// The stub sources the Dockerfile's dependency layer writes: `<crate>/src/lib.rs` for
/// each crate of its `for crate in` loop, and each path of its `for bin in` loop.
fn dockerfile_stubs(dockerfile: &str) -> BTreeSet<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let words = |marker: &str| -> Vec<String> {
        let rest = joined.split(marker).nth(1).unwrap_or_default();
        let list = rest.split(';').next().unwrap_or_default();
        list.split_whitespace().map(str::to_owned).collect()
    };
    let crates = words("for crate in ");
    let libs = crates.iter().map(|krate| format!("{krate}/src/lib.rs"));
    libs.chain(words("for bin in ")).collect()
}

/// Every target cargo knows whose file the dependency layer must stub (auto-discovered
/// integration tests under `<crate>/tests/` need none).
fn targets_to_stub() -> BTreeSet<String> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = succeed(Command::new(cargo).args([
        "metadata",
        "--no-deps",
        "--offline",
        "--format-version",
        "1",
    ]));
    let metadata: Value = serde_json::from_str(&out).unwrap();
    let mut paths = BTreeSet::new();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        let crate_dir = manifest.parent().unwrap().to_path_buf();
        for target in package["targets"].as_array().unwrap() {
            let src = PathBuf::from(target["src_path"].as_str().unwrap());
            if !src.starts_with(crate_dir.join("tests")) {
                let relative = src.strip_prefix(&root).unwrap_or(&src);
                paths.insert(relative.display().to_string());
            }
        }
    }
    paths
}

#[test]
fn the_dockerfiles_dependency_layer_stubs_exactly_the_workspaces_targets() {
    let dockerfile = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
    let stubs = dockerfile_stubs(&dockerfile);
    assert_eq!(stubs, targets_to_stub());
    let copied = copied_sources(&dockerfile);
    for lib in stubs.iter().filter(|path| path.ends_with("/src/lib.rs")) {
        let manifest = lib.replace("/src/lib.rs", "/Cargo.toml");
        assert!(
            copied.contains(&manifest),
            "the dependency layer lacks COPY {manifest}"
        );
    }
}

/// The build-context paths of every `COPY` (not `COPY --from`).
fn copied_sources(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|rest| !rest.starts_with("--"))
        .flat_map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let sources = &words[..words.len().saturating_sub(1)];
            sources.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
        })
        .collect()
}

/// Every PromQL expression of the dashboard's panels, Grafana's variables filled in.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    exprs
        .into_iter()
        .map(|expr| {
            let filled = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("$model", ".*");
            assert!(!filled.contains('$'), "an unknown variable in {expr}");
            filled
        })
        .collect()
}

fn collect_exprs(value: &Value, exprs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                exprs.push(expr.clone());
            }
            map.values().for_each(|v| collect_exprs(v, exprs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, exprs)),
        _ => {}
    }
}

/// The `expr:` of every rule in a rules file (inline, or a `>-` block under it).
fn rule_exprs(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        if rest != ">-" && rest != "|" {
            exprs.push(rest.to_owned());
            continue;
        }
        let mut block = Vec::new();
        while let Some(next) = lines.next_if(|l| l.len() - l.trim_start().len() > indent) {
            block.push(next.trim());
        }
        exprs.push(block.join(" "));
    }
    exprs
}

/// The `llmq_*` metric names an expression reads (label values in quotes left out).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("llmq_"))
        .map(str::to_owned)
        .collect()
}

/// The sample names on a `/metrics` page.
fn exported_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Names some query reads and no page exports.
fn unexported(read: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    read.difference(exported).cloned().collect()
}

#[test]
fn the_metric_check_sees_names_outside_label_values_and_reports_unknown_ones() {
    let expr = r#"sum by (le) (rate(llmq_a_seconds_bucket{job="llmq_b"}[1m])) / llmq_c:ratio"#;
    let names = metric_names(expr);
    assert_eq!(
        names,
        BTreeSet::from([
            "llmq_a_seconds_bucket".to_owned(),
            "llmq_c:ratio".to_owned()
        ])
    );
    let page = "# TYPE llmq_a_seconds histogram\nllmq_a_seconds_bucket{le=\"1\"} 3\n";
    assert_eq!(unexported(&names, &exported_names(page)), ["llmq_c:ratio"]);
    let rules = "  - alert: A\n    expr: up == 0\n  - alert: B\n    expr: >-\n      llmq_x\n      / llmq_y\n    for: 1m\n";
    assert_eq!(rule_exprs(rules), ["up == 0", "llmq_x / llmq_y"]);
}

/// The dashboard's and the alerts' queries, as one rules file for `promtool check rules`.
fn queries_as_rules(exprs: &[String]) -> String {
    let mut text = String::from("groups:\n  - name: dashboard-and-alert-queries\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(expr).unwrap();
        text.push_str(&format!(
            "      - record: llmq_query:{i}\n        expr: {quoted}\n"
        ));
    }
    text
}

#[test]
fn every_dashboard_panel_and_alert_query_parses_as_promql() {
    let root = workspace_root();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(DASHBOARD)).unwrap()).unwrap();
    let mut exprs = dashboard_exprs(&dashboard);
    assert!(
        exprs.len() >= 25,
        "the dashboard has {} queries",
        exprs.len()
    );
    exprs.extend(rule_exprs(
        &std::fs::read_to_string(root.join(ALERTS)).unwrap(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.yml");
    std::fs::write(&file, queries_as_rules(&exprs)).unwrap();
    let out = succeed(
        Command::new(deploy_tool("promtool"))
            .arg("check")
            .arg("rules")
            .arg(&file),
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );
}

/// Every `llmq_*` name the dashboard (panels and its model variable) and the alerts read.
fn names_read() -> BTreeSet<String> {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join(DASHBOARD)).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = dashboard_exprs(&dashboard);
    exprs.extend(rule_exprs(
        &std::fs::read_to_string(root.join(ALERTS)).unwrap(),
    ));
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        exprs.push(
            variable["definition"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    exprs.iter().flat_map(|expr| metric_names(expr)).collect()
}

/// Tenant `acme` (models `chat` and `broken`) and a key for it.
async fn acme_key(stack: &Stack) -> String {
    let admin = stack.operator().await;
    let registry = parse_registry("[tenants.acme]\nmodels = [\"chat\", \"broken\"]\n").unwrap();
    let changes = admin.tenants_diff(&registry, true).await.unwrap();
    admin.apply_tenants(&changes, 1).await.unwrap();
    let out = tokio::process::Command::new(workspace_binary("submitter"))
        .args(["--url", &stack.nats.url(), "keys", "create", "acme"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Requests that make every panel's series exist: plain and streamed answers, a model
/// whose deployment is missing (a cooldown and a fallback to `chat`), a bad key.
async fn exercise_edge(http: &reqwest::Client, url: &str, key: &str) {
    let chat = format!("{url}/v1/chat/completions");
    let body = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    for (model, stream) in [("chat", false), ("chat", true), ("broken", false)] {
        let response = http.post(&chat).bearer_auth(key).json(&body(model, stream));
        let response = response.send().await.unwrap();
        assert_eq!(response.status(), 200, "{model} stream={stream}");
        response.text().await.unwrap();
    }
    let refused = http.post(&chat).bearer_auth("llmq-nope-nope");
    let refused = refused.json(&body("chat", false)).send().await.unwrap();
    assert_eq!(refused.status(), 401);
}

/// A worker process with `chat` and `broken` (its deployment is a model the mock does
/// not have; it falls back to `chat`), priced.
async fn metrics_worker(stack: &Stack) -> WorkerProcess {
    let mut setup = stack.simple_setup();
    setup.body = format!(
        "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"mock-model\" }}]\n\
         [models.broken]\ndeployments = [{{ provider = \"mock\", model = \"missing-model\" }}]\n\
         fallbacks = [\"chat\"]\n\
         [[prices]]\nprovider = \"mock\"\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n",
        openai_mock_provider(16)
    );
    WorkerProcess::spawn(&setup, "deploy-metrics").await
}

async fn page(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.text().await.unwrap()
}

/// A mock whose `missing-model` answers 404 (a cooldown, then a fallback).
fn mock_with_a_missing_model() -> MockOptions {
    let missing = ModelBehavior {
        always: Some(Fault::NotFound),
        ..Default::default()
    };
    MockOptions {
        per_model: std::collections::HashMap::from([("missing-model".to_owned(), missing)]),
        ..Default::default()
    }
}

/// Waits until every name in `read` is on one of the `/metrics` pages at `urls`.
async fn wait_until_exported(http: &reqwest::Client, urls: &[String], read: &BTreeSet<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut exported = BTreeSet::new();
        for url in urls {
            exported.extend(exported_names(&page(http, url).await));
        }
        let missing = unexported(read, &exported);
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read by the dashboard or an alert, exported by neither the worker nor the edge: \
             {missing:?}\n(exported: {exported:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Prometheus server of the promtool package, scraping `targets` (job to host:port)
/// every second; killed on drop.
struct TestPrometheus {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl TestPrometheus {
    async fn start(http: &reqwest::Client, targets: &[(&str, String)]) -> TestPrometheus {
        let dir = tempfile::tempdir().unwrap();
        let alerts = workspace_root().join(ALERTS);
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{:?}]\nscrape_configs:\n",
            alerts.display().to_string()
        );
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs: [{{ targets: [\"{target}\"] }}]\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(deploy_tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let prometheus = TestPrometheus {
            _child: child,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let want = targets.len();
        eventually(Duration::from_secs(30), "Prometheus scrapes every target", || {
            let up = prometheus.query(http, "sum(up)");
            async move { (up.await.first()?["value"][1] == json!(want.to_string())).then_some(()) }
        })
        .await;
        prometheus
    }

    /// An instant query's result vector (empty when Prometheus cannot answer yet).
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Vec<Value> {
        let url = format!("{}/api/v1/query", self.url);
        let url = reqwest::Url::parse_with_params(&url, &[("query", expr)]).unwrap();
        let Ok(response) = http.get(url).send().await else {
            return Vec::new();
        };
        let body: Value = response.json().await.unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every alert rule's evaluation health once each has been evaluated (`ok` or why not).
    async fn rule_health(&self, http: &reqwest::Client) -> BTreeMap<String, String> {
        let url = format!("{}/api/v1/rules", self.url);
        eventually(Duration::from_secs(30), "every rule evaluated", || async {
            let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            let groups = body["data"]["groups"].as_array()?;
            let rules: Vec<&Value> = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let health = rules.iter().map(|rule| {
                let (name, health) = (rule["name"].as_str()?, rule["health"].as_str()?);
                (health != "unknown").then(|| (name.to_owned(), health.to_owned()))
            });
            health
                .collect::<Option<BTreeMap<_, _>>>()
                .filter(|all| !all.is_empty())
        })
        .await
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The dashboard's queries that Prometheus still answers with nothing after 30 s.
async fn empty_panels(http: &reqwest::Client, prometheus: &TestPrometheus) -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join(DASHBOARD)).unwrap();
    let mut pending = dashboard_exprs(&serde_json::from_str(&text).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for expr in pending {
            if prometheus.query(http, &expr).await.is_empty() {
                still.push(expr);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pending
}

#[tokio::test]
async fn every_metric_the_dashboard_reads_is_exported_live_and_prometheus_answers_every_panel() {
    gateway_worker::providers::http_client::install_crypto_provider();
    let stack = Stack::start_with(mock_with_a_missing_model(), Default::default()).await;
    let key = acme_key(&stack).await;
    let worker = metrics_worker(&stack).await;
    let http = reqwest::Client::new();
    let edge = llmq_tests::edge::spawn_edge(&stack.nats.url()).await;
    let edge_url = edge.url().to_owned();
    let edge_addr = edge_url.trim_start_matches("http://").to_owned();
    let targets = [
        ("llmq-worker", worker.admin_addr().to_string()),
        ("llmq-edge", edge_addr),
    ];
    let prometheus = TestPrometheus::start(&http, &targets).await;
    exercise_edge(&http, &edge_url, &key).await;
    // An undecodable payload: the worker dead-letters it.
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let ack = js.publish("llmq.jobs.chat.batch.default", "not a job".into());
    ack.await.unwrap().await.unwrap();

    let read = names_read();
    assert!(read.len() >= 20, "{read:?}");
    let pages = [
        format!("http://{}/metrics", worker.admin_addr()),
        format!("{edge_url}/metrics"),
    ];
    // The dead letter and the first queue sample come a moment later: wait for them.
    wait_until_exported(&http, &pages, &read).await;
    let empty = empty_panels(&http, &prometheus).await;
    assert!(
        empty.is_empty(),
        "panels Prometheus answers with no series: {empty:#?}"
    );
    let health = prometheus.rule_health(&http).await;
    assert_eq!(health.len(), 8, "{health:?}");
    assert!(health.values().all(|h| h == "ok"), "{health:#?}");
}

/// The value of `name{labels...}` on a `/metrics` page (every label given must match).
fn gauge(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn the_queue_gauges_show_a_backlog_its_age_and_the_models_served() {
    gateway_worker::providers::http_client::install_crypto_provider();
    let stack = Stack::with_slow_mock(Duration::from_secs(3)).await;
    let mut setup = stack.simple_setup();
    setup.body = setup
        .body
        .replace("max_concurrency = 64", "max_concurrency = 1");
    setup.set("worker", "max_inflight", "2");
    let worker = WorkerProcess::spawn(&setup, "deploy-queue").await;
    let client = stack.client().await;
    for i in 0..12 {
        let mut job = chat_job("chat", &format!("queued {i}"));
        job.tier = Tier::Batch;
        client.submit_detached(job).await.unwrap();
    }
    let http = reqwest::Client::new();
    let url = format!("http://{}/metrics", worker.admin_addr());
    let batch = ["model=\"chat\"", "tier=\"batch\""];
    let (pending, unacked, age) = eventually(Duration::from_secs(30), "a sampled backlog", || {
        let (http, url) = (&http, &url);
        async move {
            let page = page(http, url).await;
            let pending = gauge(&page, "llmq_queue_jobs_pending", &batch)?;
            let unacked = gauge(&page, "llmq_queue_jobs_unacked", &batch)?;
            let age = gauge(&page, "llmq_queue_oldest_job_age_seconds", &batch)?;
            (pending >= 8.0 && age >= 1.0).then_some((pending, unacked, age))
        }
    })
    .await;
    assert!(
        unacked >= 1.0 && pending + unacked <= 12.0,
        "{pending} {unacked}"
    );
    assert!(age < 60.0, "{age}");
    let page = page(&http, &url).await;
    assert_eq!(
        gauge(&page, "llmq_worker_model_served", &["model=\"chat\""]),
        Some(1.0)
    );
    let interactive = ["model=\"chat\"", "tier=\"interactive\""];
    assert_eq!(
        gauge(&page, "llmq_queue_jobs_pending", &interactive),
        Some(0.0)
    );
    assert!(
        !page.contains("model=\"_other\""),
        "only configured models are sampled"
    );
}
