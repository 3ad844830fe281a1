//! The DHCPv4 exchange on one NIC: DISCOVER → OFFER → REQUEST → ACK over a UDP socket bound to the
//! device, with retransmission (1, 2, 4, 4… s) until a deadline. The broadcast flag makes servers
//! broadcast their replies, which reach us before the address is configured.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use super::dhcp::{self, ClientMsg, MsgType, ServerMsg};
use super::ifconfig;
use crate::settings::ip::netmask_prefix;

/// An acknowledged lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)?;
        if let Some(r) = self.routers.first() {
            write!(f, " router {r}")?;
        }
        if !self.dns.is_empty() {
            let d: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
            write!(f, " dns {}", d.join(","))?;
        }
        write!(f, " from {}", self.server)?;
        if let Some(s) = self.lease_secs {
            write!(f, " for {s} s")?;
        }
        Ok(())
    }
}

impl Lease {
    /// What an ACK grants. Without a subnet mask option the classful default applies.
    pub fn from_ack(ack: &ServerMsg) -> Lease {
        let prefix = ack.subnet_mask.and_then(netmask_prefix).unwrap_or_else(|| {
            match ack.yiaddr.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            }
        });
        Lease {
            addr: ack.yiaddr,
            prefix,
            routers: ack.routers.clone(),
            dns: ack.dns.clone(),
            domain: ack.domain.clone(),
            server: ack.server_id.unwrap_or(ack.siaddr),
            lease_secs: ack.lease_secs,
        }
    }

    #[cfg(test)]
    pub(crate) fn test_value() -> Lease {
        Lease {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            domain: None,
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease_secs: Some(86400),
        }
    }
}

const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
/// Retransmission intervals (RFC 2131 §4.1 suggests 4 s doubling; we start faster: LANs are quick).
const INTERVALS: [u64; 4] = [1, 2, 4, 4];

/// Obtains a lease on `ifname` (which must be up) within `timeout`.
pub fn obtain(ifname: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease, String> {
    let sock = ifconfig::dhcp_socket(ifname).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let deadline = start + timeout;
    let xid = random_u32();
    let msg = |kind, offer: Option<&ServerMsg>| ClientMsg {
        kind,
        xid,
        mac,
        secs: start.elapsed().as_secs().min(u16::MAX as u64) as u16,
        requested_ip: offer.map(|o| o.yiaddr),
        server_id: offer.and_then(|o| o.server_id),
        hostname: None,
    };
    let mut naks = 0;
    while Instant::now() < deadline {
        let offer = exchange(
            &sock,
            &msg(MsgType::Discover, None),
            xid,
            mac,
            deadline,
            &[MsgType::Offer],
        )?;
        let Some(offer) = offer else { break };
        tracing::debug!(
            "net: {ifname}: offer {} from {:?}",
            offer.yiaddr,
            offer.server_id
        );
        let reply = exchange(
            &sock,
            &msg(MsgType::Request, Some(&offer)),
            xid,
            mac,
            deadline,
            &[MsgType::Ack, MsgType::Nak],
        )?;
        match reply {
            Some(ack) if ack.kind == Some(MsgType::Ack) => return Ok(Lease::from_ack(&ack)),
            Some(_) => {
                naks += 1;
                tracing::warn!(
                    "net: {ifname}: the server declined our request for {} (NAK); starting over",
                    offer.yiaddr
                );
            }
            None => break,
        }
    }
    Err(format!(
        "no {} within {:.0} s (is a DHCP server on this network? for a static address use ip=CLIENT::GATEWAY:NETMASK::{ifname}:none)",
        if naks > 0 { "acknowledged lease" } else { "offer" },
        timeout.as_secs_f64()
    ))
}

/// Sends `m` and retransmits until a reply of one of `kinds` for our `xid` and `mac` arrives, or
/// the deadline passes (`Ok(None)`).
fn exchange(
    sock: &UdpSocket,
    m: &ClientMsg,
    xid: u32,
    mac: [u8; 6],
    deadline: Instant,
    kinds: &[MsgType],
) -> Result<Option<ServerMsg>, String> {
    let bytes = dhcp::build(m);
    let mut buf = [0u8; 1500];
    for interval in INTERVALS.iter().chain(std::iter::repeat(&4)) {
        if Instant::now() >= deadline {
            return Ok(None);
        }
        sock.send_to(&bytes, SERVER)
            .map_err(|e| format!("send DHCP {:?}: {e}", m.kind))?;
        let until = (Instant::now() + Duration::from_secs(*interval)).min(deadline);
        while let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            sock.set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(format!("receive DHCP reply: {e}")),
            };
            match dhcp::parse(&buf[..n]) {
                Ok(r)
                    if r.xid == xid
                        && r.chaddr == mac
                        && r.kind.is_some_and(|k| kinds.contains(&k)) =>
                {
                    return Ok(Some(r))
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("net: ignored a malformed DHCP message: {e}"),
            }
        }
    }
    Ok(None)
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, libc::GRND_NONBLOCK) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        // Uniqueness per boot is all a transaction id needs.
        crate::console::uptime().subsec_nanos() ^ std::process::id().rotate_left(16)
    }
}
