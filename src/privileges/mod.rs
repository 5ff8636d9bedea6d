//! What ward runs as. Started as root with `user` set, it becomes that
//! user and keeps only the capabilities its configuration needs
//! ([`needs`]), in every set (permitted, effective, inheritable, ambient),
//! so a listener or inbound its supervisor rebuilds binds as the first
//! did. Started unprivileged, it checks it holds what the configuration
//! needs (file capabilities, systemd's AmbientCapabilities) and keeps
//! only that. Started as root without `user`, it stays root.
//!
//! [`apply`] runs once in `ward run`, after the config is loaded and
//! before any other thread exists (capabilities belong to a thread; every
//! thread started later inherits the caller's). The admin socket's
//! directory is handed to the user first; the socket itself is created by
//! the admin actor, as that user, when the tree starts.

pub mod needs;
mod switch;

use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};

use crate::admin::socket_file::{self, Owner, SocketFileError};
use crate::config::{Config, RunAs};
use needs::Need;
pub use switch::SwitchError;

/// What ward runs as after [`apply`].
#[derive(Debug)]
pub enum Outcome {
    /// Started as root, now `run_as` with `kept`.
    Switched {
        run_as: RunAs,
        kept: Vec<Capability>,
    },
    /// Started unprivileged (uid `uid`); `kept` is what it holds now.
    Unprivileged { uid: u32, kept: Vec<Capability> },
    /// Root without `user`: every capability kept.
    Root,
}

impl Outcome {
    /// One line in the log saying what ward runs as and kept.
    pub fn log(&self) {
        match self {
            Outcome::Switched { run_as, kept } => tracing::info!(
                user = %run_as.user,
                uid = run_as.uid,
                group = %run_as.group,
                gid = run_as.gid,
                kept = %Names(kept),
                "privileges dropped"
            ),
            Outcome::Unprivileged { uid, kept } => tracing::info!(
                uid,
                kept = %Names(kept),
                "running unprivileged"
            ),
            Outcome::Root => tracing::info!(
                "running as root with every capability; set `user` to drop to an unprivileged user"
            ),
        }
    }
}

/// Capabilities as `CAP_A,CAP_B`, or `none`.
struct Names<'a>(&'a [Capability]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        f.write_str(&names.join(","))
    }
}

/// Why ward cannot run as configured.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{}", missing_message(.missing, *.uid))]
    Missing { uid: u32, missing: Vec<Need> },
    #[error(
        "user: {user:?} is set, but ward runs as uid {uid}, not as root: only root can become \
         another user. Start ward as root, or leave user unset and grant the capabilities the \
         config needs (docs/operations.md, Privileges)"
    )]
    NotRoot { user: String, uid: u32 },
    #[error("ward has {0} threads: privileges must be set while it has one")]
    Threads(usize),
    #[error("reading this process's capabilities: {0}")]
    Read(caps::errors::CapsError),
    #[error("admin.socket: {0}")]
    AdminSocket(#[from] SocketFileError),
    #[error("becoming user {user}: {source}")]
    Switch { user: String, source: SwitchError },
    #[error("keeping only {kept}: {source}")]
    Narrow { kept: String, source: SwitchError },
}

/// One line per missing capability, naming what needs it and the remedy.
fn missing_message(missing: &[Need], uid: u32) -> String {
    let lines: Vec<String> = missing
        .iter()
        .map(|need| {
            let cap = need.cap;
            let what = match need.reasons.len() {
                1 => format!("{} needs", need.reasons[0]),
                n => format!("{} (and {} more) need", need.reasons[0], n - 1),
            };
            let remedy = if uid == 0 {
                format!(
                    "which this process lacks although it runs as root (a container or service \
                     that withholds it: grant {cap} there)"
                )
            } else {
                let lower = cap.to_string().to_lowercase();
                format!(
                    "which ward (uid {uid}) does not have: start it as root with `user` set \
                     in the config, or grant it (setcap {lower}+ep on the binary, or systemd \
                     AmbientCapabilities={cap})"
                )
            };
            format!("{what} {cap}, {remedy}")
        })
        .collect();
    lines.join("\n")
}

/// Makes ward run as `config` says (see the module doc). Call once,
/// while the process has a single thread.
pub fn apply(config: &Config) -> Result<Outcome, PrivilegeError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let needs = needs::needs(config, needs::unprivileged_port_start());
    let permitted = caps::read(None, CapSet::Permitted).map_err(PrivilegeError::Read)?;
    let run_as = config.run_as.as_ref();
    if let Some(run_as) = run_as.filter(|r| euid != 0 && (euid, egid) != (r.uid, r.gid)) {
        return Err(PrivilegeError::NotRoot {
            user: run_as.user.clone(),
            uid: euid,
        });
    }
    let absent: Vec<Need> = needs
        .iter()
        .filter(|need| !permitted.contains(&need.cap))
        .cloned()
        .collect();
    if !absent.is_empty() {
        return Err(PrivilegeError::Missing {
            uid: euid,
            missing: absent,
        });
    }
    let kept: Vec<Capability> = needs.iter().map(|need| need.cap).collect();
    let keep: CapsHashSet = kept.iter().copied().collect();
    match run_as {
        Some(run_as) if euid == 0 => {
            become_user(config, run_as, &keep)?;
            Ok(Outcome::Switched {
                run_as: run_as.clone(),
                kept,
            })
        }
        None if euid == 0 => Ok(Outcome::Root),
        // Unprivileged already (systemd's User= or DynamicUser=, or the
        // user named): keep what is needed of what it was given.
        _ => {
            switch::narrow_to(&keep).map_err(|source| PrivilegeError::Narrow {
                kept: Names(&kept).to_string(),
                source,
            })?;
            Ok(Outcome::Unprivileged { uid: euid, kept })
        }
    }
}

/// As root: hands the admin socket's directory to the user, becomes it,
/// and checks it can bind the socket there.
fn become_user(config: &Config, run_as: &RunAs, keep: &CapsHashSet) -> Result<(), PrivilegeError> {
    let owner = Owner {
        uid: run_as.uid,
        gid: config.admin.group.as_ref().map_or(run_as.gid, |g| g.gid),
        shared: config.admin.group.is_some(),
    };
    // A ward serving the socket keeps its directory: refused here, before
    // anything is handed over (Service::start would refuse it later).
    socket_file::ensure_not_live(&config.admin.socket)?;
    socket_file::hand_dir_to(&config.admin.socket, owner)?;
    switch::become_user(&run_as.user, run_as.uid, run_as.gid, keep).map_err(|source| {
        PrivilegeError::Switch {
            user: run_as.user.clone(),
            source,
        }
    })?;
    socket_file::check_usable(&config.admin.socket, &run_as.user)?;
    Ok(())
}

/// Threads of this process now (0 when /proc cannot say).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}
