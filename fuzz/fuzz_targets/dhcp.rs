//! DHCP replies the rescue image's PID 1 receives from the site network
//! (`ferry_init::net::dhcp::parse`: BOOTP header, magic cookie, options with overload
//! ignored), and the lease it would configure from an ACK.
#![no_main]

use ferry_init::net::dhcp::{self, MsgType};
use ferry_init::net::Lease;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = dhcp::parse(data) {
        if msg.kind == Some(MsgType::Ack) {
            let _ = Lease::from_ack(&msg);
        }
    }
});
