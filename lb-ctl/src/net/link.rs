//! Network interfaces: index, name and MAC address, and MAC text.
//!
//! Every lookup goes through a socket made by the calling thread (`if_nametoindex`,
//! `if_indextoname`, `SIOCGIFHWADDR`), so it sees the network namespace the thread is in, also
//! after `netns::enter`; `/sys/class/net` is never read (it shows the namespace of its mount).

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context as _, Result, bail};

/// The index of the interface called `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let missing = || anyhow::anyhow!("no interface {name} in this network namespace");
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return Err(missing());
    }
    let c_name = CString::new(name).map_err(|_| missing())?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODEV) | Some(libc::ENXIO) => Err(missing()),
            _ => Err(err).with_context(|| format!("looking up interface {name}")),
        };
    }
    Ok(index)
}

/// The name of the interface with index `ifindex` in the calling thread's network namespace.
pub fn name(ifindex: u32) -> Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has the IF_NAMESIZE bytes if_indextoname may write.
    let ptr = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ptr.is_null() {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENXIO) | Some(libc::ENODEV) => {
                bail!("no interface with index {ifindex} in this network namespace")
            }
            _ => Err(err).with_context(|| format!("looking up interface index {ifindex}")),
        };
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// The Ethernet (MAC) address of the interface with index `ifindex`.
pub fn mac(ifindex: u32) -> Result<[u8; 6]> {
    let name = name(ifindex)?;
    mac_by_name(&name)
}

/// The Ethernet (MAC) address of the interface called `name`.
pub fn mac_by_name(name: &str) -> Result<[u8; 6]> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("no interface {name} in this network namespace");
    }
    let socket = ioctl_socket()?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr of the ifreq we pass.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODEV) {
            bail!("no interface {name} in this network namespace");
        }
        return Err(err).with_context(|| format!("reading the MAC address of {name}"));
    }
    // SAFETY: the kernel filled in the hwaddr member of the union.
    let hwaddr = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hwaddr.sa_family != libc::ARPHRD_ETHER {
        bail!(
            "interface {name} has no Ethernet MAC address (link type {})",
            hwaddr.sa_family
        );
    }
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hwaddr.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// A datagram socket for interface ioctls, made in the calling thread's network namespace.
fn ioctl_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("opening a socket for interface ioctls");
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{netns, testlab::Lab};

    #[test]
    fn missing_interface_is_a_clear_error() {
        let err = ifindex("lbnt-none0").unwrap_err().to_string();
        assert_eq!(err, "no interface lbnt-none0 in this network namespace");
        let err = ifindex("a-name-that-is-far-too-long")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no interface a-name-that-is-far-too-long"),
            "{err}"
        );
        let err = name(0x7fff_fff0).unwrap_err().to_string();
        assert!(err.contains("no interface with index"), "{err}");
    }

    #[test]
    fn veth_index_name_and_mac_inside_a_namespace() {
        let lab = Lab::new("l");
        let (ns, dev) = (lab.director.clone(), Lab::DIRECTOR_DEV);
        let (index, back, dir_mac, lo) = netns::run_in(&ns, move || {
            let index = ifindex(dev)?;
            Ok((index, name(index)?, mac(index)?, mac_by_name("lo")))
        })
        .unwrap();
        assert!(index > 0);
        assert_eq!(back, dev);
        assert_eq!(dir_mac, Lab::DIRECTOR_MAC);
        assert_eq!(
            crate::plan::convert::format_mac(&dir_mac),
            "02:00:00:00:00:01"
        );
        // lo has a (zero) address but its link type is loopback, not Ethernet.
        assert!(
            lo.unwrap_err()
                .to_string()
                .contains("no Ethernet MAC address")
        );

        // The peer namespace has its own interface with its own MAC.
        let peer_mac = netns::run_in(&lab.peer, || mac(ifindex(Lab::PEER_DEV)?)).unwrap();
        assert_eq!(peer_mac, Lab::PEER_MAC);

        // The test's own thread is still in the original namespace, where the veth is absent.
        let err = ifindex(dev).unwrap_err().to_string();
        assert_eq!(err, format!("no interface {dev} in this network namespace"));
    }
}
