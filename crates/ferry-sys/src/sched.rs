//! Scheduling priorities of the calling thread: the I/O class (`ioprio_set`, linux/ioprio.h)
//! and the CPU nice value (`setpriority`).
//!
//! On Linux both are per thread and inherited by threads started afterwards, so a process that
//! sets them before it starts its workers runs entirely at that priority. Neither has a nix
//! wrapper: `ioprio_set` has no libc function at all and goes through `syscall(2)`.

use std::io;

/// `IOPRIO_CLASS_IDLE` (linux/ioprio.h): the thread gets disk time only when no other
/// process wants the disk (honoured by the BFQ scheduler; mq-deadline and none ignore it).
pub const IOPRIO_CLASS_IDLE: u32 = 3;
/// `IOPRIO_CLASS_BE`: best effort, the default class.
pub const IOPRIO_CLASS_BE: u32 = 2;
const IOPRIO_CLASS_SHIFT: u32 = 13;
/// `IOPRIO_WHO_PROCESS`: `who` is a thread id, 0 the calling thread.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// The ioprio value for a class and a level (0..=7; ignored by the idle class).
pub fn ioprio_value(class: u32, level: u32) -> u32 {
    (class << IOPRIO_CLASS_SHIFT) | (level & 0x7)
}

/// Put the calling thread (and threads it starts later) in I/O class `class` at `level`.
pub fn set_io_priority(class: u32, level: u32) -> io::Result<()> {
    let prio = libc::c_long::from(ioprio_value(class, level));
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            libc::c_long::from(IOPRIO_WHO_PROCESS),
            0 as libc::c_long,
            prio,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's I/O priority value (`ioprio_get`): class in bits 13.., level below.
pub fn io_priority() -> io::Result<u32> {
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_get,
            libc::c_long::from(IOPRIO_WHO_PROCESS),
            0 as libc::c_long,
        )
    };
    u32::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Set the calling thread's nice value (-20..=19; raising it needs no privilege).
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes integers only; `who` 0 is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's nice value.
pub fn nice() -> io::Result<i32> {
    // getpriority may legitimately return -1: errno tells an error apart.
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes integers only; `who` 0 is the calling thread.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if r == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioprio_values_match_linux_ioprio_h() {
        // IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0) and (IOPRIO_CLASS_BE, 4).
        assert_eq!(ioprio_value(IOPRIO_CLASS_IDLE, 0), 0x6000);
        assert_eq!(ioprio_value(IOPRIO_CLASS_BE, 4), 0x4004);
    }

    /// On a thread of its own, so the test runner's other threads keep their priority.
    #[test]
    fn a_thread_lowers_its_own_priorities_and_its_children_inherit_them() {
        std::thread::spawn(|| {
            set_io_priority(IOPRIO_CLASS_IDLE, 0).expect("ioprio_set");
            set_nice(19).expect("setpriority");
            let child = std::thread::spawn(|| (io_priority(), nice()))
                .join()
                .expect("child");
            for (prio, n) in [(io_priority(), nice()), child] {
                assert_eq!(
                    prio.expect("ioprio_get") >> IOPRIO_CLASS_SHIFT,
                    IOPRIO_CLASS_IDLE
                );
                assert_eq!(n.expect("getpriority"), 19);
            }
        })
        .join()
        .expect("test thread");
    }
}
