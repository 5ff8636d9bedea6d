//! The admin socket file: its directory, permissions, stale-file handling,
//! and removal when the admin server goes away.
//!
//! A file left by a crashed run (nobody accepts on it) is replaced; a file a
//! live ward is serving is not stolen. The file is removed on drop, but only
//! if it is still the one this process created (same device, inode and
//! change time: tmpfs reuses inode numbers), so a late drop never deletes a
//! successor's socket.

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error("{0} is in use by a running ward; stop it first or pick another admin.socket")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{path}: {why}; the admin socket's directory must be owned by this user and not writable by others")]
    UnsafeDir { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: user {user} cannot create the admin socket in this directory ({source}); give it a directory of its own (ward creates a missing one for it)")]
    NotUsable {
        path: PathBuf,
        user: String,
        source: nix::errno::Errno,
    },
}

impl ward_supervision::Classify for SocketFileError {
    fn class(&self) -> &'static str {
        match self {
            SocketFileError::Io { source, .. } => {
                ward_actors::classify_io_error(source, ward_actors::IoSide::Listener).label()
            }
            _ => "config",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SocketFileError + '_ {
    move |source| SocketFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The socket file this process created; removed on drop.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    identity: FileIdentity,
}

/// What tells one file at a path from a later one.
#[derive(Debug, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if FileIdentity::of(&meta) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the admin socket at `path`: creates its directory when missing
/// (0700, or 0750 with group `gid` so the group can reach the socket),
/// refuses a directory someone else could swap files in, replaces a stale
/// file, sets mode 0600 (0660 and the group when `gid` is given).
pub fn bind(path: &Path, gid: Option<u32>) -> Result<(UnixListener, SocketFile), SocketFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if dir.exists() {
            check_dir(dir)?;
        } else {
            create_dir(dir, gid)?;
        }
    }
    remove_if_stale(path)?;
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_err(path))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io_err(path)(io::Error::from(e)))?;
    }
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        identity: FileIdentity::of(&meta),
    };
    Ok((listener, file))
}

fn create_dir(dir: &Path, gid: Option<u32>) -> Result<(), SocketFileError> {
    let mode = if gid.is_some() { 0o750 } else { 0o700 };
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err(dir))?;
    if let Some(gid) = gid {
        nix::unistd::chown(dir, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io_err(dir)(io::Error::from(e)))?;
    }
    Ok(())
}

/// Who ward becomes after start, and the group of the socket's directory
/// (`admin.group`, or the user's).
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// `admin.group` is set: the directory is 0750, not 0700.
    pub shared: bool,
}

/// Run as root before ward becomes `owner`: the socket's directory is
/// handed to that user when it is ward's own. Missing directories are
/// created (0700, or 0750 when shared) and given to it; an existing one
/// owned by root and holding nothing but the socket (an earlier run as
/// root left it) is given to it too. Any other directory is left as it is:
/// [`check_usable`] then says whether the user can bind there.
pub fn hand_dir_to(path: &Path, owner: Owner) -> Result<(), SocketFileError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    let mode = if owner.shared { 0o750 } else { 0o700 };
    for dir in missing.into_iter().rev() {
        DirBuilder::new()
            .mode(mode)
            .create(dir)
            .map_err(io_err(dir))?;
        chown_to(dir, owner)?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if meta.is_dir() && meta.uid() == 0 && holds_only(dir, path)? {
        chown_to(dir, owner)?;
    }
    Ok(())
}

fn chown_to(dir: &Path, owner: Owner) -> Result<(), SocketFileError> {
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(owner.uid),
        nix::unistd::Gid::from_raw(owner.gid),
    );
    nix::unistd::chown(dir, Some(uid), Some(gid)).map_err(|e| io_err(dir)(io::Error::from(e)))
}

/// True when `dir` is empty or holds only `socket`.
fn holds_only(dir: &Path, socket: &Path) -> Result<bool, SocketFileError> {
    let mut entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    Ok(entries.all(|e| e.is_ok_and(|e| Some(e.file_name().as_os_str()) == socket.file_name())))
}

/// Run after ward became `user`: whether it can create the socket in its
/// directory (and so `ward ctl` as that user can reach it).
pub fn check_usable(path: &Path, user: &str) -> Result<(), SocketFileError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let access = nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK;
    nix::unistd::access(dir, access).map_err(|source| SocketFileError::NotUsable {
        path: dir.to_path_buf(),
        user: user.to_string(),
        source,
    })?;
    check_dir(dir)
}

/// An existing directory is used only when nobody but this user (or root)
/// can replace what is in it: owned by us or root, and not group- or
/// world-writable unless sticky (like /tmp, where only owners delete).
fn check_dir(dir: &Path) -> Result<(), SocketFileError> {
    let meta = std::fs::metadata(dir).map_err(io_err(dir))?;
    let unsafe_dir = |why: String| SocketFileError::UnsafeDir {
        path: dir.to_path_buf(),
        why,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".to_string()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not {euid}",
            meta.uid()
        )));
    }
    let mode = meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(unsafe_dir(format!(
            "mode {:o} lets others replace files in it",
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Fails when a live ward already serves `path` (checked before starting).
pub fn ensure_not_live(path: &Path) -> Result<(), SocketFileError> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketFileError::InUse(path.to_path_buf())),
        Err(_) => Ok(()),
    }
}

fn remove_if_stale(path: &Path) -> Result<(), SocketFileError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketFileError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketFileError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale admin socket");
            std::fs::remove_file(path).map_err(io_err(path))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_private_dir_and_socket_and_removes_it_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/dir/admin.sock");
        let (_listener, file) = bind(&path, None).unwrap();
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let sock_mode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(sock_mode, 0o600);
        drop(file);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("admin.sock");
        let (listener, file) = bind(&path, None).unwrap();
        assert!(matches!(bind(&path, None), Err(SocketFileError::InUse(_))));
        // A crashed run: the listener is gone, the file stays.
        drop(listener);
        std::mem::forget(file);
        let (_listener, _file) = bind(&path, None).expect("stale file replaced");
    }

    #[tokio::test]
    async fn a_regular_file_is_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("admin.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            bind(&path, None),
            Err(SocketFileError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    #[tokio::test]
    async fn a_directory_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        let path = dir.join("admin.sock");
        assert!(matches!(
            bind(&path, None),
            Err(SocketFileError::UnsafeDir { .. })
        ));
        assert!(!path.exists());
        // Sticky, like /tmp: others cannot remove or rename our files.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o1777)).unwrap();
        let (_listener, _file) = bind(&path, None).expect("sticky directory is fine");
    }

    #[tokio::test]
    async fn a_group_gets_a_directory_it_can_enter() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/admin.sock");
        let gid = nix::unistd::getegid().as_raw();
        let (_listener, _file) = bind(&path, Some(gid)).unwrap();
        let dir = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o750);
        assert_eq!(dir.gid(), gid);
        let sock = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(sock.mode() & 0o777, 0o660);
    }

    #[tokio::test]
    async fn a_late_drop_leaves_a_successors_socket_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("admin.sock");
        let (listener, old) = bind(&path, None).unwrap();
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        let (_listener, _new) = bind(&path, None).unwrap();
        drop(old);
        assert!(path.exists(), "the successor's file survives");
    }

    /// As root: a missing directory is made for the user; one an earlier
    /// run as root left (holding only the socket) is given to it; one
    /// holding anything else stays root's.
    #[test]
    fn the_sockets_own_directory_is_handed_to_the_user_and_no_other() {
        if !crate::skip::require(&[], true) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let nobody = Owner {
            uid: 65534,
            gid: 65534,
            shared: false,
        };
        let owner = |p: &Path| {
            let meta = std::fs::metadata(p).unwrap();
            (meta.uid(), meta.gid(), meta.mode() & 0o777)
        };
        let made = tmp.path().join("a/b/admin.sock");
        hand_dir_to(&made, nobody).unwrap();
        assert_eq!(owner(&tmp.path().join("a")), (65534, 65534, 0o700));
        assert_eq!(owner(&tmp.path().join("a/b")), (65534, 65534, 0o700));

        let left = tmp.path().join("left/admin.sock");
        std::fs::create_dir(left.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&left).unwrap());
        hand_dir_to(&left, nobody).unwrap();
        assert_eq!(owner(left.parent().unwrap()).0, 65534);

        let shared = tmp.path().join("shared/admin.sock");
        std::fs::create_dir(shared.parent().unwrap()).unwrap();
        std::fs::write(tmp.path().join("shared/other"), b"not ward's").unwrap();
        hand_dir_to(&shared, nobody).unwrap();
        assert_eq!(owner(shared.parent().unwrap()).0, 0);
    }
}
