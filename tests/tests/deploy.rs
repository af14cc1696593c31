//! Every deployment file in `deploy/` gives the binary a configuration it
//! accepts: each file's arguments, environment and config are run through
//! `ringcache --check-config` (which resolves and validates everything and
//! binds nothing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").join("deploy").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

/// A scratch file that is removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, text: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("ringcache-deploy-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        Scratch(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `--check-config` with `args` and `env` (nothing else from ours).
fn check(what: &str, args: &[String], env: &[(String, String)]) -> String {
    let mut cmd = Command::new(ringcache_tests::binary());
    cmd.env_clear().args(args).arg("--check-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = ringcache_tests::output_within(cmd, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("config ok"),
        "{what}: ringcache {args:?} refused its configuration:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The strings of a one-line JSON array (`["a", "b"]`).
fn json_list(text: &str) -> Vec<String> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner.split(',').map(|s| s.trim().trim_matches('"').to_string()).filter(|s| !s.is_empty()).collect()
}

#[test]
fn the_example_config_file_is_accepted() {
    let secret = Scratch::new("secret", "0123456789abcdef\n");
    let args = ["--config".to_string(), deploy("ringcache.toml").display().to_string()];
    let args = [&args[..], &["--cluster-secret-file".to_string(), secret.path().to_string()]].concat();
    let out = check("deploy/ringcache.toml", &args, &[]);
    assert!(out.contains("mode = cluster"), "{out}");
}

#[test]
fn the_systemd_unit_starts_a_valid_node() {
    let unit = read("systemd/ringcache.service");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let secret = Scratch::new("cred", "0123456789abcdef\n");
    let config = deploy("ringcache.toml").display().to_string();
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/ringcache"));
    let args: Vec<String> = words
        .map(|w| match w {
            "/etc/ringcache/ringcache.toml" => config.clone(),
            w if w.starts_with("${CREDENTIALS_DIRECTORY}") => secret.path().to_string(),
            w => w.to_string(),
        })
        .collect();
    check("deploy/systemd/ringcache.service", &args, &[]);
}

#[test]
fn the_dockerfile_runs_a_valid_node() {
    let file = read("Dockerfile");
    let mut env = Vec::new();
    let mut args = Vec::new();
    // The final stage only.
    let last = file.rsplit("\nFROM ").next().expect("a stage");
    for line in last.lines() {
        if let Some(vars) = line.strip_prefix("ENV ") {
            for kv in vars.split_whitespace() {
                let (k, v) = kv.split_once('=').expect("ENV k=v");
                env.push((k.to_string(), v.to_string()));
            }
        } else if let Some(list) = line.strip_prefix("CMD ") {
            args = json_list(list);
        } else if let Some(list) = line.strip_prefix("ENTRYPOINT ") {
            assert_eq!(json_list(list), vec!["/usr/local/bin/ringcache".to_string()]);
        }
    }
    assert!(!args.is_empty(), "no CMD");
    let out = check("deploy/Dockerfile", &args, &env);
    assert!(out.contains("bind = 0.0.0.0") && out.contains("mode = standalone"), "{out}");
}

#[test]
fn the_kubernetes_manifest_runs_a_valid_node() {
    let yaml = read("kubernetes/ringcache.yaml");
    let start = yaml.find("ringcache.toml: |").expect("the ConfigMap's ringcache.toml");
    let end = yaml.find("# END ringcache.toml").expect("END marker");
    let toml: String =
        yaml[start..end].lines().skip(1).map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l))).collect();
    let config = Scratch::new("k8s.toml", &toml);
    let secret = Scratch::new("k8s-secret", "0123456789abcdef\n");
    let args_line = yaml.lines().find_map(|l| l.trim().strip_prefix("args: ")).expect("container args");
    let args: Vec<String> = json_list(args_line)
        .into_iter()
        .map(|a| if a == "/etc/ringcache/ringcache.toml" { config.path().to_string() } else { a })
        .collect();
    // The Secret's mount is here instead.
    let toml = toml.replace("/etc/ringcache-secret/cluster-secret", secret.path());
    std::fs::write(&config.0, toml).unwrap();
    let env = vec![
        ("RINGCACHE_CLUSTER_ANNOUNCE_IP".to_string(), "10.1.2.3".to_string()),
        ("RINGCACHE_REQUIREPASS".to_string(), "pw".to_string()),
    ];
    let out = check("deploy/kubernetes/ringcache.yaml", &args, &env);
    assert!(out.contains("mode = cluster") && out.contains("cluster-announce-ip = 10.1.2.3"), "{out}");
    assert!(out.contains("requirepass = (set)"), "{out}");
    for probe in ["path: /health", "path: /ready"] {
        assert!(yaml.contains(probe), "no {probe} probe");
    }
    for kind in ["kind: StatefulSet", "kind: PodDisruptionBudget", "clusterIP: None"] {
        assert!(yaml.contains(kind), "no {kind}");
    }
}
