//! A process that thaws the frozen filesystems when the agent dies without thawing them.
//!
//! Why: after a SIGKILL, an OOM kill or an abort nothing in the agent runs, and waiting for
//! its next start does not work when the root filesystem is frozen: PID 1 and journald block
//! on it (seen under systemd: "task systemd:1 blocked for more than 120 seconds"), so nothing
//! restarts the agent and the server stays frozen. The guardian is forked before the first
//! freeze, holds its own descriptors of the mount points and the read end of a pipe whose
//! write end only the agent holds. The kernel closes that end when the agent dies, however it
//! dies; on that end of file the guardian thaws every filesystem (FITHAW; one that is not
//! frozen answers EINVAL, which is harmless) and exits. When the agent thawed them itself it
//! writes `T` first and the guardian exits touching nothing.
//!
//! After the fork the child runs only async-signal-safe system calls on memory prepared before
//! the fork (the parent is multi-threaded): it allocates nothing and takes no lock. It ignores
//! SIGTERM, SIGINT and SIGHUP, so that the handlers it inherited (whose self-pipe it shares with
//! the agent's signal thread) never run in it. A power cut of the whole machine needs neither.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use libc::c_int;
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult, Pid};

/// The byte the agent writes when it thawed everything itself.
const STAND_DOWN: u8 = b'T';

/// The guardian of one freeze; see the module docs.
pub(crate) struct Guardian {
    pid: Pid,
    /// The write end; closing it without [`STAND_DOWN`] makes the guardian thaw.
    tell: Option<OwnedFd>,
}

impl Guardian {
    /// Fork the guardian of the filesystems `dirs` (open directories on them).
    pub(crate) fn spawn(dirs: &[File]) -> io::Result<Guardian> {
        let fds: Vec<RawFd> = dirs.iter().map(AsRawFd::as_raw_fd).collect();
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)?;
        let (r, w) = (read_end.as_raw_fd(), write_end.as_raw_fd());
        // SAFETY: the child calls only `watch`, which makes async-signal-safe system calls on
        // `fds` (allocated before the fork, only read) and ends in `_exit`; it never returns
        // into Rust code of the parent's threads.
        match unsafe { fork() }? {
            ForkResult::Child => watch(r, w, &fds),
            ForkResult::Parent { child } => {
                drop(read_end);
                Ok(Guardian {
                    pid: child,
                    tell: Some(write_end),
                })
            }
        }
    }

    /// Everything is thawed: the guardian exits without touching anything.
    pub(crate) fn stand_down(mut self) {
        if let Some(w) = self.tell.take() {
            let _ = nix::unistd::write(&w, &[STAND_DOWN]);
        }
    }
}

impl Drop for Guardian {
    /// Closing the pipe without standing down makes the guardian thaw (again: harmless when
    /// already thawed); then it is reaped.
    fn drop(&mut self) {
        self.tell.take();
        let _ = waitpid(self.pid, None);
    }
}

/// The guardian's whole life: wait for the agent's word or death, thaw unless told not to.
fn watch(read_fd: RawFd, write_fd: RawFd, fds: &[RawFd]) -> ! {
    // SAFETY: signal(2), close(2), read(2), ioctl(2) and _exit(2) are async-signal-safe; the
    // buffer is on this stack and `fds` was written before the fork.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::close(write_fd);
        let mut byte = 0u8;
        loop {
            let n = libc::read(read_fd, (&mut byte as *mut u8).cast(), 1);
            if n == 1 && byte == STAND_DOWN {
                libc::_exit(0);
            }
            if n == 1 || (n < 0 && *libc::__errno_location() == libc::EINTR) {
                continue;
            }
            break;
        }
        for &fd in fds {
            let mut unused: c_int = 0;
            let _ = crate::freeze::fithaw_raw(fd, &mut unused);
        }
        libc::_exit(0)
    }
}
