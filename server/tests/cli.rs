//! The binary's command line: help, version, and configuration errors that
//! must stop it before it binds anything (exit code 1, a clear message).

use std::process::Command;

fn ringcache() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringcache"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RINGCACHE_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_lists_the_design_flags() {
    let out = ringcache().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--bind",
        "--port",
        "--cluster-port",
        "--node-name",
        "--seed",
        "--replicas",
        "--write-quorum",
        "--read-quorum",
        "--vnodes",
        "--weight",
        "--maxmemory",
        "--maxmemory-policy",
        "--requirepass",
        "--cluster-secret",
        "--admin-port",
        "--log-format",
        "--config",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_configuration_exits_1_with_a_message() {
    for (args, needle) in [
        (&["--maxmemory-policy", "lru"][..], "maxmemory-policy"),
        (&["--maxmemory", "12parsecs"][..], "maxmemory"),
        (&["--write-quorum", "5"][..], "write-quorum"),
        (&["--log-format", "xml"][..], "log-format"),
        (&["--config", "/nonexistent/ringcache.toml"][..], "cannot read config file"),
    ] {
        let out = ringcache().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn environment_is_read() {
    let out = ringcache().env("RINGCACHE_MAXMEMORY_POLICY", "nope").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("nope"));
}
