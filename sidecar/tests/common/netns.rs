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
