//! IPv4 interface configuration with the classic ioctls (no netlink): link up, address, netmask,
//! default route; plus the DHCP client's socket. Thin and untested here: the QEMU smoke test
//! (tests/init/) exercises it.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::super::settings::ip::prefix_netmask;

/// `struct ifreq`: the name, then a 24-byte union (flags or a sockaddr).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

/// `struct sockaddr_in` bytes for `addr` (port 0).
fn sockaddr_in(addr: Ipv4Addr) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&addr.octets());
    s
}

/// `struct rtentry` (linux/route.h).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: [u8; 16],
    rt_gateway: [u8; 16],
    rt_genmask: [u8; 16],
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(r)
}

fn control_socket() -> io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    Ok(fd)
}

fn ioctl<T>(what: &str, name: &str, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    let s = control_socket()?;
    // SAFETY: `arg` is the struct this request expects (ifreq or rtentry), valid for the call.
    #[allow(clippy::useless_conversion)]
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), req as _, arg as *mut T) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what} on {name}: {e}")));
    }
    Ok(())
}

/// Sets IFF_UP on `name`.
pub fn link_up(name: &str) -> io::Result<()> {
    let mut r = ifreq(name)?;
    ioctl("get flags", name, libc::SIOCGIFFLAGS, &mut r)?;
    let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | libc::IFF_UP as i16;
    r.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl("set IFF_UP", name, libc::SIOCSIFFLAGS, &mut r)
}

/// Sets the address and netmask (the kernel adds the subnet route).
pub fn set_addr(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut r = ifreq(name)?;
    r.data[..16].copy_from_slice(&sockaddr_in(addr));
    ioctl("set address", name, libc::SIOCSIFADDR, &mut r)?;
    let mut r = ifreq(name)?;
    r.data[..16].copy_from_slice(&sockaddr_in(prefix_netmask(prefix)));
    ioctl("set netmask", name, libc::SIOCSIFNETMASK, &mut r)
}

/// Adds `default via gw dev name metric metric`.
pub fn add_default_route(name: &str, gw: Ipv4Addr, metric: u16) -> io::Result<()> {
    let mut dev = ifreq(name)?.name;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gw),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        // The ioctl interface stores metric - 1.
        rt_metric: metric.saturating_add(1).min(i16::MAX as u16) as libc::c_short,
        rt_dev: dev.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ioctl(
        &format!("add default route via {gw}"),
        name,
        libc::SIOCADDRT,
        &mut rt,
    ) {
        Err(e)
            if e.raw_os_error() == Some(libc::EEXIST) || e.to_string().contains("File exists") =>
        {
            Ok(())
        }
        r => r,
    }
}

/// A UDP socket on 0.0.0.0:68 bound to one device, allowed to broadcast; several can coexist.
pub fn dhcp_socket(name: &str) -> io::Result<UdpSocket> {
    // Checks the name as an interface name (length, NUL) before the socket is made.
    ifreq(name)?;
    let fd = control_socket()?;
    let failed = |what: &'static str| {
        move |e: nix::errno::Errno| {
            let e = io::Error::from(e);
            io::Error::new(
                e.kind(),
                format!("{what} on the DHCP socket of {name}: {e}"),
            )
        }
    };
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(failed("SO_REUSEADDR"))?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true).map_err(failed("SO_BROADCAST"))?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &name.into())
        .map_err(failed("SO_BINDTODEVICE"))?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, 68)).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("bind the DHCP socket of {name} to port 68: {e}"),
        )
    })?;
    Ok(UdpSocket::from(fd))
}
