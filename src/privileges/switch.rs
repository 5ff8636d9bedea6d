//! The system calls of a privilege drop: becoming another user while
//! keeping some capabilities, and narrowing the capability sets to
//! exactly those. Capabilities (and the keep-caps flag) belong to a
//! thread, not a process, so both must run while ward has one thread:
//! every thread started afterwards inherits what they left. Deciding what
//! to keep is [`super`]'s.

use std::ffi::CString;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};

/// A step of the drop that the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: nix::errno::Errno,
    },
    #[error("{step}: {source}")]
    Caps {
        step: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("the capability sets are not {keep:?} after narrowing them (effective: {found:?})")]
    Unexpected {
        keep: Vec<Capability>,
        found: Vec<Capability>,
    },
    #[error("the user name {0:?} holds a NUL byte")]
    Name(String),
}

fn sys(step: &'static str) -> impl FnOnce(nix::errno::Errno) -> SwitchError {
    move |source| SwitchError::Sys { step, source }
}

fn caps_err(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> SwitchError {
    move |source| SwitchError::Caps { step, source }
}

/// Becomes `user` (`uid`, primary group `gid`, and the user's
/// supplementary groups from the group database), keeping `keep` of the
/// capabilities root had: real, effective and saved ids all change, so
/// there is no way back.
pub fn become_user(user: &str, uid: u32, gid: u32, keep: &CapsHashSet) -> Result<(), SwitchError> {
    let name = CString::new(user).map_err(|_| SwitchError::Name(user.to_string()))?;
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::initgroups(&name, gid).map_err(sys("initgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
    // Without it, leaving uid 0 empties the permitted set too.
    caps::securebits::set_keepcaps(true).map_err(caps_err("PR_SET_KEEPCAPS"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
    let narrowed = narrow_to(keep);
    let cleared = caps::securebits::set_keepcaps(false).map_err(caps_err("PR_SET_KEEPCAPS"));
    narrowed.and(cleared)
}

/// Sets the permitted, effective, inheritable and ambient sets to exactly
/// `keep`, which must be permitted now. Effective first (raising what
/// `keep` holds), permitted last: the kernel checks each set against the
/// others as they are at that moment.
pub fn narrow_to(keep: &CapsHashSet) -> Result<(), SwitchError> {
    // Nothing to change (an unprivileged run that needs nothing): no
    // capset, which a sandbox may refuse for no reason of ours.
    if holds_exactly(keep)? {
        return Ok(());
    }
    caps::set(None, CapSet::Effective, keep).map_err(caps_err("effective set"))?;
    caps::set(None, CapSet::Inheritable, keep).map_err(caps_err("inheritable set"))?;
    caps::set(None, CapSet::Permitted, keep).map_err(caps_err("permitted set"))?;
    caps::set(None, CapSet::Ambient, keep).map_err(caps_err("ambient set"))?;
    if holds_exactly(keep)? {
        Ok(())
    } else {
        let sorted = |set: &CapsHashSet| {
            let mut caps: Vec<Capability> = set.iter().copied().collect();
            caps.sort_by_key(|c| c.index());
            caps
        };
        let found = caps::read(None, CapSet::Effective).unwrap_or_default();
        Err(SwitchError::Unexpected {
            keep: sorted(keep),
            found: sorted(&found),
        })
    }
}

/// Whether the permitted, effective, inheritable and ambient sets are
/// all `keep`.
fn holds_exactly(keep: &CapsHashSet) -> Result<bool, SwitchError> {
    for set in [
        CapSet::Permitted,
        CapSet::Effective,
        CapSet::Inheritable,
        CapSet::Ambient,
    ] {
        if &caps::read(None, set).map_err(caps_err("reading the capability sets"))? != keep {
            return Ok(false);
        }
    }
    Ok(true)
}
