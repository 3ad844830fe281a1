//! The kernel log as `/dev/kmsg` gives it: one record per read (`PRIO,SEQ,TIME,FLAGS;text`),
//! read without blocking so the end of the log ends the read. A regular file (tests) is read
//! line by line instead.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Most records read (the kernel's ring holds far fewer).
pub const MAX_RECORDS: usize = 100_000;

/// The text of each record of `path` (the part after `;`, continuation lines dropped), at most
/// `max`; empty when the log cannot be opened.
pub fn messages(path: &Path, max: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return Vec::new();
    };
    let is_file = f.metadata().is_ok_and(|m| m.is_file());
    let text_of = |record: &str| {
        let first = record.lines().next().unwrap_or("");
        first.split_once(';').map_or(first, |(_, t)| t).to_owned()
    };
    if is_file {
        let mut all = String::new();
        if f.take(64 << 20).read_to_string(&mut all).is_err() {
            return Vec::new();
        }
        return all.lines().take(max).map(text_of).collect();
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    while out.len() < max {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.push(text_of(&String::from_utf8_lossy(&buf[..n]))),
            // EPIPE: records were overwritten while reading; the next read goes on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break, // EAGAIN: the end of the log
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_as_records() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kmsg");
        std::fs::write(
            &p,
            "6,1,100,-;r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2\n4,2,200,-;plain\n",
        )
        .unwrap();
        assert_eq!(
            messages(&p, 10),
            [
                "r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2",
                "plain"
            ]
        );
        assert_eq!(messages(&p, 1).len(), 1);
        assert!(messages(&d.path().join("none"), 10).is_empty());
    }
}
