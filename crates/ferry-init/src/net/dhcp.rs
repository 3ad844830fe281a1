//! DHCPv4 messages (RFC 2131/2132), the subset a client needs, as pure functions: building
//! DISCOVER/REQUEST and parsing OFFER/ACK/NAK. Every received byte is hostile: parsing checks each
//! length and never panics (proptest below).
//!
//! Layout (frozen by the RFC): `op htype hlen hops | xid(4) | secs(2) flags(2) | ciaddr yiaddr
//! siaddr giaddr (4 each) | chaddr(16) | sname(64) | file(128) | magic 99.130.83.99 | options`,
//! options as `code len value…`, `0` = pad, `255` = end.

use std::net::Ipv4Addr;

/// Offset of the options after the fixed part and the magic cookie.
const OPTIONS_AT: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// BOOTP's minimum message size; some servers drop shorter requests.
const MIN_LEN: usize = 300;
/// The "broadcast" flag: the server must broadcast its reply, because we cannot receive unicast
/// before the address is configured (we use a plain UDP socket, not a raw one).
pub const FLAG_BROADCAST: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_DOMAIN: u8 = 15;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_MAX_SIZE: u8 = 57;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

/// Message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<Self> {
        use MsgType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

/// A message we send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMsg {
    pub kind: MsgType,
    pub xid: u32,
    pub mac: [u8; 6],
    /// Seconds since we started (some relays use it).
    pub secs: u16,
    /// REQUEST in SELECTING state: the offered address and the chosen server.
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub hostname: Option<String>,
}

/// A server reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMsg {
    pub kind: Option<MsgType>,
    pub xid: u32,
    pub flags: u16,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub server_id: Option<Ipv4Addr>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message is {0} bytes, shorter than a DHCP header with options")]
    TooShort(usize),
    #[error("op {0} is not a BOOTREPLY")]
    NotReply(u8),
    #[error("hardware type/length {0}/{1} is not Ethernet")]
    NotEthernet(u8, u8),
    #[error("the magic cookie is missing")]
    NoMagic,
    #[error("option {code} runs past the end of the message")]
    Truncated { code: u8 },
    #[error("option {code} has length {len}, which is invalid for it")]
    BadLength { code: u8, len: usize },
    #[error("message type {0} is unknown")]
    UnknownType(u8),
}

/// Serialises a client message with the broadcast flag set.
pub fn build(m: &ClientMsg) -> Vec<u8> {
    let mut b = vec![0u8; OPTIONS_AT];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&m.xid.to_be_bytes());
    b[8..10].copy_from_slice(&m.secs.to_be_bytes());
    b[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    b[28..34].copy_from_slice(&m.mac);
    b[236..240].copy_from_slice(&MAGIC);
    let mut opt = |code: u8, value: &[u8]| {
        b.push(code);
        b.push(value.len() as u8);
        b.extend_from_slice(value);
    };
    opt(OPT_MSG_TYPE, &[m.kind as u8]);
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&m.mac);
    opt(OPT_CLIENT_ID, &client_id);
    if let Some(ip) = m.requested_ip {
        opt(OPT_REQUESTED_IP, &ip.octets());
    }
    if let Some(ip) = m.server_id {
        opt(OPT_SERVER_ID, &ip.octets());
    }
    if let Some(h) = m
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty() && h.len() < 256)
    {
        opt(OPT_HOSTNAME, h.as_bytes());
    }
    opt(OPT_MAX_SIZE, &1500u16.to_be_bytes());
    opt(
        OPT_PARAMS,
        &[
            OPT_SUBNET_MASK,
            OPT_ROUTER,
            OPT_DNS,
            OPT_DOMAIN,
            OPT_LEASE_TIME,
            OPT_SERVER_ID,
        ],
    );
    b.push(OPT_END);
    if b.len() < MIN_LEN {
        b.resize(MIN_LEN, OPT_PAD);
    }
    b
}

/// Parses a server message (BOOTREPLY). Options overloaded into sname/file are ignored.
pub fn parse(b: &[u8]) -> Result<ServerMsg, ParseError> {
    if b.len() < OPTIONS_AT {
        return Err(ParseError::TooShort(b.len()));
    }
    if b[0] != 2 {
        return Err(ParseError::NotReply(b[0]));
    }
    if b[1] != 1 || b[2] != 6 {
        return Err(ParseError::NotEthernet(b[1], b[2]));
    }
    if b[236..240] != MAGIC {
        return Err(ParseError::NoMagic);
    }
    let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
    let mut m = ServerMsg {
        kind: None,
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        flags: u16::from_be_bytes([b[10], b[11]]),
        yiaddr: ip(16),
        siaddr: ip(20),
        chaddr: [b[28], b[29], b[30], b[31], b[32], b[33]],
        server_id: None,
        subnet_mask: None,
        routers: Vec::new(),
        dns: Vec::new(),
        domain: None,
        lease_secs: None,
    };
    let mut i = OPTIONS_AT;
    while i < b.len() {
        let code = b[i];
        match code {
            OPT_PAD => {
                i += 1;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let len = *b.get(i + 1).ok_or(ParseError::Truncated { code })? as usize;
        let v = b
            .get(i + 2..i + 2 + len)
            .ok_or(ParseError::Truncated { code })?;
        apply_option(&mut m, code, v)?;
        i += 2 + len;
    }
    Ok(m)
}

fn apply_option(m: &mut ServerMsg, code: u8, v: &[u8]) -> Result<(), ParseError> {
    let bad = || ParseError::BadLength { code, len: v.len() };
    let one_ip = || -> Result<Ipv4Addr, ParseError> {
        let a: [u8; 4] = v.try_into().map_err(|_| bad())?;
        Ok(Ipv4Addr::from(a))
    };
    let ips = || -> Result<Vec<Ipv4Addr>, ParseError> {
        if v.is_empty() || !v.chunks_exact(4).remainder().is_empty() {
            return Err(bad());
        }
        Ok(v.chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect())
    };
    match code {
        OPT_MSG_TYPE => {
            let [t] = v else { return Err(bad()) };
            m.kind = Some(MsgType::from_u8(*t).ok_or(ParseError::UnknownType(*t))?);
        }
        OPT_SERVER_ID => m.server_id = Some(one_ip()?),
        OPT_SUBNET_MASK => m.subnet_mask = Some(one_ip()?),
        OPT_ROUTER => m.routers = ips()?,
        OPT_DNS => m.dns = ips()?,
        OPT_LEASE_TIME => m.lease_secs = Some(u32::from_be_bytes(v.try_into().map_err(|_| bad())?)),
        OPT_DOMAIN => {
            let s = String::from_utf8_lossy(v);
            let s = s.trim_end_matches('\0').trim();
            m.domain =
                (!s.is_empty() && s.bytes().all(|c| c.is_ascii_graphic())).then(|| s.to_string());
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn discover() -> ClientMsg {
        ClientMsg {
            kind: MsgType::Discover,
            xid: 0xdead_beef,
            mac: MAC,
            secs: 3,
            requested_ip: None,
            server_id: None,
            hostname: None,
        }
    }

    /// A reply as QEMU's slirp sends it (built by hand from the RFC layout).
    fn reply(kind: u8, extra: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        b[10] = 0x80;
        b[16..20].copy_from_slice(&[10, 0, 2, 15]);
        b[20..24].copy_from_slice(&[10, 0, 2, 2]);
        b[28..34].copy_from_slice(&MAC);
        b[236..240].copy_from_slice(&MAGIC);
        b.extend_from_slice(&[
            53, 1, kind, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2,
        ]);
        b.extend_from_slice(&[6, 8, 10, 0, 2, 3, 192, 0, 2, 53, 51, 4, 0, 1, 0x51, 0x80]);
        b.extend_from_slice(extra);
        b.push(255);
        b
    }

    #[test]
    fn discover_layout() {
        let b = build(&discover());
        assert_eq!(b.len(), MIN_LEN);
        assert_eq!(&b[..4], &[1, 1, 6, 0]);
        assert_eq!(&b[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&b[8..12], &[0, 3, 0x80, 0], "secs, then the broadcast flag");
        assert!(b[12..28].iter().all(|&x| x == 0), "ciaddr..giaddr are zero");
        assert_eq!(&b[28..34], &MAC);
        assert_eq!(&b[236..240], &MAGIC);
        assert_eq!(&b[240..243], &[53, 1, 1]);
        assert_eq!(&b[243..251], &[61, 7, 1, 0x52, 0x54, 0x00, 0x12, 0x34]);
        let end = b.iter().rposition(|&x| x == 255).unwrap();
        assert!(b[end + 1..].iter().all(|&x| x == 0));
    }

    #[test]
    fn request_carries_requested_ip_server_and_hostname() {
        let m = ClientMsg {
            kind: MsgType::Request,
            requested_ip: Some(Ipv4Addr::new(10, 0, 2, 15)),
            server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
            hostname: Some("rescue".into()),
            ..discover()
        };
        let b = build(&m);
        let opts = &b[240..];
        let find = |code: u8| -> Vec<u8> {
            let mut i = 0;
            while opts[i] != 255 {
                if opts[i] == code {
                    return opts[i + 2..i + 2 + opts[i + 1] as usize].to_vec();
                }
                i += 2 + opts[i + 1] as usize;
            }
            panic!("option {code} missing")
        };
        assert_eq!(find(53), [3]);
        assert_eq!(find(50), [10, 0, 2, 15]);
        assert_eq!(find(54), [10, 0, 2, 2]);
        assert_eq!(find(12), b"rescue");
        assert_eq!(find(57), [5, 0xdc]);
        assert_eq!(find(55), [1, 3, 6, 15, 51, 54]);
    }

    #[test]
    fn parses_an_offer() {
        let m = parse(&reply(
            2,
            &[
                15, 12, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm', 0,
            ],
        ))
        .unwrap();
        assert_eq!(m.kind, Some(MsgType::Offer));
        assert_eq!(m.xid, 0xdead_beef);
        assert_eq!(m.flags, FLAG_BROADCAST);
        assert_eq!(m.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(m.siaddr, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(m.chaddr, MAC);
        assert_eq!(m.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(m.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(m.routers, [Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(
            m.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(192, 0, 2, 53)]
        );
        assert_eq!(m.lease_secs, Some(86_400));
        assert_eq!(m.domain.as_deref(), Some("example.com"));
    }

    #[test]
    fn parse_errors_table() {
        let mut no_magic = reply(5, &[]);
        no_magic[236] = 0;
        let mut request = reply(5, &[]);
        request[0] = 1;
        let mut token_ring = reply(5, &[]);
        token_ring[1] = 6;
        let cases: Vec<(Vec<u8>, ParseError)> = vec![
            (vec![], ParseError::TooShort(0)),
            (reply(5, &[])[..239].to_vec(), ParseError::TooShort(239)),
            (request, ParseError::NotReply(1)),
            (token_ring, ParseError::NotEthernet(6, 6)),
            (no_magic, ParseError::NoMagic),
            (
                reply(5, &[3, 5, 1, 2, 3, 4, 5]),
                ParseError::BadLength { code: 3, len: 5 },
            ),
            (
                reply(5, &[1, 3, 255, 255, 0]),
                ParseError::BadLength { code: 1, len: 3 },
            ),
            (reply(5, &[53, 1, 9]), ParseError::UnknownType(9)),
            (
                reply(5, &[53, 2, 5, 5]),
                ParseError::BadLength { code: 53, len: 2 },
            ),
            (reply(5, &[6, 0]), ParseError::BadLength { code: 6, len: 0 }),
            (
                {
                    let mut r = reply(5, &[]);
                    r.pop();
                    r.extend_from_slice(&[3, 8, 1, 2]);
                    r
                },
                ParseError::Truncated { code: 3 },
            ),
            (
                {
                    let mut r = reply(5, &[]);
                    r.pop();
                    r.push(3);
                    r
                },
                ParseError::Truncated { code: 3 },
            ),
        ];
        for (i, (bytes, want)) in cases.into_iter().enumerate() {
            assert_eq!(parse(&bytes), Err(want), "case {i}");
        }
        // No end option, padding and unknown options are fine.
        let mut r = reply(6, &[0, 0, 200, 2, 9, 9]);
        r.pop();
        assert_eq!(parse(&r).unwrap().kind, Some(MsgType::Nak));
    }

    #[test]
    fn our_own_messages_are_not_replies() {
        assert_eq!(parse(&build(&discover())), Err(ParseError::NotReply(1)));
    }

    proptest::proptest! {
        #[test]
        fn parsing_hostile_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parsing_hostile_options_never_panics(opts in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut b = reply(5, &[]);
            b.truncate(240);
            b.extend_from_slice(&opts);
            let _ = parse(&b);
        }
    }
}
