//! The LVM2 metadata text parser (`ferry_probe::lvm_text::parse`) on its own: sections,
//! values, lists, strings with escapes, comments. Parsing is deterministic and a failure names a
//! line of the text.
#![no_main]

use ferry_probe::lvm_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match lvm_text::parse(&text) {
        Ok(tree) => assert_eq!(lvm_text::parse(&text).ok(), Some(tree)),
        Err(e) => assert!(e.line as usize <= text.matches('\n').count() + 1, "{e}"),
    }
});
