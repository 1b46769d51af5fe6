//! `pareidolia worker`: a node that joins a daemon's run and breeds or scores for it. The
//! flags become [`WorkerOptions`]; `pareidolia_daemon::cluster` does the rest.

use anyhow::{Context, Result};
use pareidolia_core::RunConfig;
use pareidolia_daemon::cluster::{self, WorkerEnd, WorkerOptions};
use pareidolia_daemon::map_elites::messages::NodeRole;

use crate::cli::{WorkerArgs, WorkerRole};

/// `pareidolia worker`.
pub fn worker(args: WorkerArgs) -> Result<()> {
    let cookie = args
        .cookie_file
        .as_deref()
        .map(cluster::read_cookie)
        .transpose()?;
    let config = args
        .config
        .as_deref()
        .map(RunConfig::from_file)
        .transpose()
        .context("--config")?;
    let options = WorkerOptions {
        join: args.join,
        cookie,
        cookie_origin: match &args.cookie_file {
            Some(path) => format!("from {}", path.display()),
            None => "the loopback default: no --cookie-file".to_owned(),
        },
        role: match args.role {
            WorkerRole::Evaluator => NodeRole::Evaluator,
            WorkerRole::Mutator => NodeRole::Mutator,
            WorkerRole::Both => NodeRole::Both,
        },
        backend: args.backend,
        config,
        daemon_timeout: std::time::Duration::from_secs(args.daemon_timeout.max(1)),
    };
    match cluster::run_worker(options)? {
        WorkerEnd::DaemonGone | WorkerEnd::Signalled => Ok(()),
    }
}
