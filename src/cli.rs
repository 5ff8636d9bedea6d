//! The command line: `ward run`, `ward check`, `ward ctl ...`.
//!
//! Exit codes: 0 success; 1 a runtime failure (the tree died, `ctl` could
//! not reach the service or was refused); 2 an invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;
use ward_supervision::TreeNode;

use crate::admin::client::{self, ClientError};
use crate::admin::protocol::{DialerInfo, GroupInfo, Killed, Request, Stats, VERSION};
use crate::admin::render;
use crate::config::{Config, ConfigErrors};
use crate::telemetry::logging;

#[derive(Debug, Parser)]
#[command(
    name = "ward",
    version,
    about = "DNS forwarder and UDP relay for home and edge routers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service in the foreground (SIGTERM or SIGINT stops it).
    Run {
        /// Configuration file; the shipped default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and report every error with line:column.
    Check {
        /// Configuration file; the shipped default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Talk to a running ward through its admin socket.
    Ctl(CtlArgs),
}

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The admin socket; by default the one of --config (or of the default config).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// The configuration whose admin socket to use.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The live actor tree.
    Tree {
        #[arg(long)]
        json: bool,
    },
    /// Kill the actor at PATH (e.g. dns/upstreams/cf); its supervisor restarts it.
    Kill { path: String },
    /// Counters and process figures.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Client and server versions.
    Version,
    /// The DNS cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Every dialer's health per track (TCP, UDP), and the groups' choices.
    Dialers {
        #[arg(long)]
        json: bool,
    },
    /// Probe a dialer, or every member of a group, now.
    Probe { name: String },
    /// Read the configuration file again and apply what changed; when it
    /// is invalid, print why and change nothing (exit 1).
    Reload {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Forget every cached answer.
    Flush,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => check(config),
        Command::Ctl(args) => ctl(args),
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load_or_default(path.as_deref()).map_err(|errors: ConfigErrors| {
        eprintln!("{errors}");
        ExitCode::from(2)
    })
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // Before the log's writer thread and the runtime's: capabilities
    // belong to a thread, and those inherit what this one kept.
    let privileges = match crate::privileges::apply(&config) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("ward: {e}");
            return ExitCode::from(1);
        }
    };
    let _log = match logging::init(&config.log) {
        Ok(guard) => guard,
        Err(e) => {
            let file = config
                .log
                .file
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            eprintln!("cannot open log file {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    privileges.log();
    ward_actors::Throttle::init_global(config.log.throttle_window);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The handlers are installed before the tree starts: once READY=1 is
    // out, systemd may send SIGTERM at any moment.
    let serve = async { crate::app::run(config, shutdown_signal()).await };
    match runtime.block_on(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Installs the handlers of SIGTERM and SIGINT now (inside the runtime);
/// completes on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop ward with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!("{}: ok", config.source);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn ctl(args: CtlArgs) -> ExitCode {
    let explicit = args.socket.is_some();
    let socket = match args.socket {
        Some(socket) => socket,
        None => match load(args.config) {
            Ok(config) => config.admin.socket,
            Err(code) => return code,
        },
    };
    let socket = client::resolve_socket(socket, explicit);
    let result = match args.command {
        CtlCommand::Tree { json } => ctl_tree(&socket, json),
        CtlCommand::Kill { path } => ctl_kill(&socket, path),
        CtlCommand::Stats { json } => ctl_stats(&socket, json),
        CtlCommand::Version => ctl_version(&socket),
        CtlCommand::Cache(CacheCommand::Flush) => ctl_cache_flush(&socket),
        CtlCommand::Dialers { json } => ctl_dialers(&socket, json),
        CtlCommand::Probe { name } => ctl_probe(&socket, name),
        CtlCommand::Reload { json } => ctl_reload(&socket, json),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ward ctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn field<T: serde::de::DeserializeOwned>(mut reply: Value, name: &str) -> Result<T, ClientError> {
    Ok(serde_json::from_value(reply[name].take())?)
}

fn ctl_tree(socket: &std::path::Path, json: bool) -> Result<String, ClientError> {
    let tree: TreeNode = field(client::request(socket, &Request::Tree)?, "tree")?;
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(&tree)?)
    } else {
        render::tree(&tree)
    })
}

fn ctl_kill(socket: &std::path::Path, path: String) -> Result<String, ClientError> {
    let killed: Killed = field(client::request(socket, &Request::Kill { path })?, "killed")?;
    Ok(format!(
        "killed {} ({}, id {})\n",
        killed.path, killed.kind, killed.id
    ))
}

fn ctl_stats(socket: &std::path::Path, json: bool) -> Result<String, ClientError> {
    let reply = client::request(socket, &Request::Stats)?;
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&reply["stats"])?
        ));
    }
    let stats: Stats = field(reply, "stats")?;
    Ok(render::stats(&stats))
}

fn ctl_cache_flush(socket: &std::path::Path) -> Result<String, ClientError> {
    let flushed: u64 = field(client::request(socket, &Request::CacheFlush)?, "flushed")?;
    Ok(format!("flushed {flushed} cached answers\n"))
}

fn ctl_dialers(socket: &std::path::Path, json: bool) -> Result<String, ClientError> {
    let mut reply = client::request(socket, &Request::Dialers)?;
    if json {
        let both = serde_json::json!({"dialers": reply["dialers"].take(), "groups": reply["groups"].take()});
        return Ok(format!("{}\n", serde_json::to_string_pretty(&both)?));
    }
    let groups: Vec<GroupInfo> = field(reply.clone(), "groups")?;
    let dialers: Vec<DialerInfo> = field(reply, "dialers")?;
    Ok(render::dialers(&dialers, &groups))
}

fn ctl_probe(socket: &std::path::Path, name: String) -> Result<String, ClientError> {
    let probed: Vec<String> = field(client::request(socket, &Request::Probe { name })?, "probed")?;
    Ok(format!("probing {}\n", probed.join(", ")))
}

fn ctl_reload(socket: &std::path::Path, json: bool) -> Result<String, ClientError> {
    let mut reply = client::request_within(socket, &Request::Reload, client::RELOAD_TIMEOUT)?;
    let report = reply["reload"].take();
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&report)?));
    }
    Ok(render::reload(&report))
}

fn ctl_version(socket: &std::path::Path) -> Result<String, ClientError> {
    let server: String = field(client::request(socket, &Request::Version)?, "version")?;
    Ok(format!("ward ctl {VERSION}\nward {server}\n"))
}
