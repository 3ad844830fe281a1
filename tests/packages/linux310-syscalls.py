#!/usr/bin/python3
"""Run a command as if on Linux 3.10 (CentOS 7's kernel), as far as the system-call table goes.

    linux310-syscalls.py COMMAND [ARG...]

A seccomp filter (libseccomp, python3-seccomp) makes every x86_64 system call that Linux added
after 3.10 fail with ENOSYS, as an old kernel answers, then execs COMMAND. What it does not
emulate: flags and behaviour added to old calls (O_TMPFILE, new ioctls, ...), nor an old kernel's
drivers or bugs. Used by tests/packages/old-userland.sh.
"""
import errno
import os
import sys

import seccomp

# (first kernel, system calls); names libseccomp 2.5 does not know are given by number.
ADDED_AFTER_3_10 = [
    ("3.14", ["sched_setattr", "sched_getattr"]),
    ("3.15", ["renameat2"]),
    ("3.17", ["seccomp", "getrandom", "memfd_create", "kexec_file_load"]),
    ("3.18", ["bpf"]),
    ("3.19", ["execveat"]),
    ("4.3", ["userfaultfd", "membarrier"]),
    ("4.4", ["mlock2"]),
    ("4.5", ["copy_file_range"]),
    ("4.6", ["preadv2", "pwritev2"]),
    ("4.9", ["pkey_mprotect", "pkey_alloc", "pkey_free"]),
    ("4.11", ["statx"]),
    ("4.18", ["io_pgetevents", "rseq"]),
    ("5.1", ["pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register"]),
    ("5.2", ["open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick"]),
    ("5.3", ["pidfd_open", "clone3"]),
    ("5.6", ["openat2", "pidfd_getfd"]),
    ("5.8", ["faccessat2"]),
    ("5.9", ["close_range"]),
    ("5.10", ["process_madvise"]),
    ("5.11", ["epoll_pwait2"]),
    ("5.12", ["mount_setattr"]),
    ("5.13", ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"]),
    ("5.14", ["memfd_secret", "quotactl_fd"]),
    ("5.15", ["process_mrelease"]),
    ("5.16", ["futex_waitv"]),
    ("5.17", ["set_mempolicy_home_node"]),
    ("6.5", [451]),  # cachestat
    ("6.6", [452, 453]),  # fchmodat2, map_shadow_stack
    ("6.7", [454, 455, 456]),  # futex_wake, futex_wait, futex_requeue
    ("6.8", [457, 458, 459, 460, 461]),  # statmount, listmount, lsm_*
    ("6.10", [462]),  # mseal
    ("6.13", [463, 464, 465, 466]),  # setxattrat, getxattrat, listxattrat, removexattrat
    ("6.15", [467]),  # open_tree_attr
    ("6.17", [468, 469]),  # file_getattr, file_setattr
]


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    n = 0
    for _, calls in ADDED_AFTER_3_10:
        for call in calls:
            f.add_rule(seccomp.ERRNO(errno.ENOSYS), call)
            n += 1
    f.load()
    print(f"linux310-syscalls: {n} system calls newer than Linux 3.10 answer ENOSYS", file=sys.stderr)
    os.execvp(sys.argv[1], sys.argv[1:])
    return 127


if __name__ == "__main__":
    sys.exit(main())
