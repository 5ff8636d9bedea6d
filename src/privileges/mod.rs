//! What ward runs as. Started unprivileged, it checks it holds the
//! capabilities its configuration needs ([`needs`]: file capabilities,
//! systemd's AmbientCapabilities) and keeps only those, in every set
//! (permitted, effective, inheritable, ambient), so a listener or inbound
//! its supervisor rebuilds binds as the first did. Started as root, it
//! stays root.
//!
//! [`apply`] runs once in `ward run`, after the config is loaded and
//! before any other thread exists (capabilities belong to a thread; every
//! thread started later inherits the caller's).

pub mod needs;
mod switch;

use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};

use crate::config::Config;
use needs::Need;
pub use switch::SwitchError;

/// What ward runs as after [`apply`].
#[derive(Debug)]
pub enum Outcome {
    /// Started unprivileged (uid `uid`); `kept` is what it holds now.
    Unprivileged { uid: u32, kept: Vec<Capability> },
    /// Root: every capability kept.
    Root,
}

impl Outcome {
    /// One line in the log saying what ward runs as and kept.
    pub fn log(&self) {
        match self {
            Outcome::Unprivileged { uid, kept } => tracing::info!(
                uid,
                kept = %Names(kept),
                "running unprivileged"
            ),
            Outcome::Root => tracing::info!("running as root with every capability"),
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
    #[error("ward has {0} threads: privileges must be set while it has one")]
    Threads(usize),
    #[error("reading this process's capabilities: {0}")]
    Read(caps::errors::CapsError),
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
                    "which ward (uid {uid}) does not have: start it as root, or grant it \
                     (setcap {lower}+ep on the binary, or systemd AmbientCapabilities={cap})"
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
    let needs = needs::needs(config, needs::unprivileged_port_start());
    let permitted = caps::read(None, CapSet::Permitted).map_err(PrivilegeError::Read)?;
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
    if euid == 0 {
        return Ok(Outcome::Root);
    }
    // Unprivileged (systemd's User= or DynamicUser=): keep what is needed
    // of what it was given.
    switch::narrow_to(&keep).map_err(|source| PrivilegeError::Narrow {
        kept: Names(&kept).to_string(),
        source,
    })?;
    Ok(Outcome::Unprivileged { uid: euid, kept })
}

/// Threads of this process now (0 when /proc cannot say).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}
