//! Running test code inside a network namespace: the namespace is a
//! per-thread attribute on Linux, so a thread that calls setns(2) opens its
//! sockets there while the rest of the test process stays put.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Runs `f` on a new thread inside namespace `ns` (a name under /run/netns).
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd we own; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Sends raw Ethernet frames on `iface` of namespace `ns` (AF_PACKET), the
/// way an attacker on the underlay would.
pub fn inject(ns: &str, iface: &str, frames: Vec<Vec<u8>>) -> usize {
    let iface = std::ffi::CString::new(iface).unwrap();
    in_ns(ns, move || {
        // SAFETY: plain socket(2); the fd is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: iface is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        assert!(index > 0, "no such interface");
        // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        let mut sent = 0;
        for f in &frames {
            addr.sll_addr[..6].copy_from_slice(&f[..6]);
            // SAFETY: buffer and address pointers are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    owned.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n == f.len() as isize {
                sent += 1;
            }
        }
        sent
    })
    .join()
    .unwrap()
}
