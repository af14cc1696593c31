//! The `ringcache` binary: configuration, logging, runtime, node.

use std::process::ExitCode;

use ringcache_server::config::{Config, LogFormat};
use ringcache_server::node::Node;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringcache: {e}");
            return ExitCode::from(1);
        }
    };
    if config.check_config {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_env("RINGCACHE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("ringcache-worker");
    if config.threads > 0 {
        runtime.worker_threads(config.threads as usize);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringcache: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let node = Node::bind(config).await?;
        node.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ringcache: {e:#}");
            ExitCode::from(1)
        }
    }
}
