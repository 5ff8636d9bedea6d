//! The members users picked of groups through the API (`PUT
//! /proxies/{name}`), kept in a small state file so that a pick outlives
//! a restart of ward, as mihomo's `store-selected` does. A group keeps its
//! pick across its dialers' restarts and reloads on its own (the group
//! lives in the dialer set, not in an actor); this file is for the process.
//!
//! The file is `api.state`, else `picks.ron` in the directory systemd names
//! in `STATE_DIRECTORY` (`StateDirectory=ward` in the unit), else none (the
//! picks last as long as the process). It holds every group's pick, written
//! whole after each pick to a temporary file renamed over the old one, so
//! a crash mid-write leaves the old file. A file that does not parse, a
//! group or member no longer configured: logged and left out, never a
//! reason not to start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ward_actors::dialer::{Dialers, Via};

/// The state file's name in systemd's state directory.
const FILE_NAME: &str = "picks.ron";

/// What the file holds.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// Group name to the member picked.
    picks: BTreeMap<String, String>,
}

/// The picks' state file, written one pick at a time.
pub struct Picks {
    path: Option<PathBuf>,
    /// Held across a write: the file written last holds the last picks.
    writing: tokio::sync::Mutex<()>,
}

impl Picks {
    /// The state file `configured`, or systemd's state directory's; reads
    /// it and applies its picks to `dialers`.
    pub fn open(configured: Option<PathBuf>, dialers: &Dialers) -> Arc<Picks> {
        let path = configured.or_else(|| {
            let dirs = std::env::var_os("STATE_DIRECTORY")?;
            // systemd lists several directories with colons; ours is first.
            let first = dirs.to_str()?.split(':').next()?.to_owned();
            Some(Path::new(&first).join(FILE_NAME))
        });
        match &path {
            Some(path) => restore(path, dialers),
            None => tracing::info!(
                "groups' picks last until ward stops: set api.state to keep them in a file"
            ),
        }
        Arc::new(Picks {
            path,
            writing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes every group's pick as it is now. A failure is logged: the
    /// pick holds until ward stops either way.
    pub async fn save(&self, dialers: &Dialers) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let _writing = self.writing.lock().await;
        let state = State {
            picks: dialers
                .groups()
                .iter()
                .filter_map(|g| Some((g.name.clone(), g.picked()?.name.clone())))
                .collect(),
        };
        let written = tokio::task::spawn_blocking(move || {
            let result = write(&path, &state);
            (path, result)
        })
        .await;
        match written {
            Ok((_, Ok(()))) => {}
            Ok((path, Err(e))) => tracing::warn!(file = %path.display(), error = %e,
                "could not save the groups' picks; they hold until ward stops"),
            Err(e) => tracing::warn!(error = %e, "saving the groups' picks did not finish"),
        }
    }
}

/// Applies the picks in `path` (absent: none yet).
fn restore(path: &Path, dialers: &Dialers) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "groups' picks not read");
            return;
        }
    };
    let state: State = match ron::from_str(&text) {
        Ok(state) => state,
        Err(e) => {
            let at = format!("{}:{}", e.span.start.line, e.span.start.col);
            tracing::warn!(file = %path.display(), %at, error = %e.code,
                "groups' picks not read: the file does not parse; the next pick rewrites it");
            return;
        }
    };
    for (group, member) in &state.picks {
        let applied = match dialers.via(group) {
            Some(Via::Group(g)) => g.set_pick(member),
            _ => false,
        };
        if applied {
            tracing::info!(%group, %member, "group member picked before the restart");
        } else {
            tracing::info!(%group, %member,
                "a saved pick left out: the group or the member is no longer configured");
        }
    }
}

/// Writes `state` to a temporary file beside `path`, flushed to disk, then
/// renames it over `path`.
fn write(path: &Path, state: &State) -> std::io::Result<()> {
    let text = ron::ser::to_string_pretty(state, ron::ser::PrettyConfig::default())
        .map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_round_trips_and_a_rewrite_replaces_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picks.ron");
        let mut state = State::default();
        state.picks.insert("nodes".into(), "n2".into());
        state.picks.insert("other".into(), "x".into());
        write(&path, &state).unwrap();
        let read: State = ron::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, state);
        state.picks.remove("other");
        write(&path, &state).unwrap();
        let read: State = ron::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, state);
        assert!(!dir.path().join("picks.ron.tmp").exists());
    }
}
