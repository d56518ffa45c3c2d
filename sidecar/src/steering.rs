//! CPU-local queue steering for the TUN (`datapath.steering: cpu`): each
//! packet the kernel hands to the TUN goes to the queue of the CPU it is
//! being processed on, and that queue's worker is pinned to that CPU.
//!
//! Why: a worker sleeping on an idle vCPU costs tens of microseconds to
//! wake here (the host has to run the vCPU again; docs/datapath.md,
//! Latency), and a ping crosses several such wake-ups. When the packet's
//! CPU and the worker's CPU are the same, each is a local context switch.
#![allow(unsafe_code)] // bpf(2), ioctl(2), sched_{get,set}affinity(2) only.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use thiserror::Error;

/// `_IOR('T', 224, int)`: attach a steering eBPF program to a TUN.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// Size of the `union bpf_attr` prefix we fill (the kernel requires the
/// rest of what we pass to be zero).
const ATTR_LEN: usize = 128;

/// `r0 = bpf_get_smp_processor_id(); return r0;` as eBPF instructions
/// (little-endian `struct bpf_insn`). The TUN takes the result modulo its
/// number of queues.
const PROGRAM: [u64; 2] = [
    // BPF_JMP | BPF_CALL, imm = 8 (BPF_FUNC_get_smp_processor_id).
    0x0000_0008_0000_0085,
    // BPF_JMP | BPF_EXIT.
    0x0000_0000_0000_0095,
];

/// Why CPU steering could not be set up.
#[derive(Debug, Error)]
pub enum SteeringError {
    /// The queue-per-CPU mapping needs CPUs 0..n-1.
    #[error(
        "datapath.steering: cpu needs the sidecar allowed on CPUs 0..{}, it is allowed on {allowed:?}; use steering: flow",
        allowed.len().saturating_sub(1)
    )]
    CpuSet {
        /// The CPUs the process may run on.
        allowed: Vec<usize>,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn os(what: &'static str) -> impl FnOnce(io::Error) -> SteeringError {
    move |source| SteeringError::Os { what, source }
}

/// Number of queues for CPU steering: one per CPU the process may use,
/// which must be CPUs 0..n-1 (queue i is CPU i).
pub fn queues() -> Result<usize, SteeringError> {
    let allowed = allowed_cpus().map_err(os("reading the CPU affinity"))?;
    if allowed.is_empty() || allowed.iter().enumerate().any(|(i, c)| i != *c) {
        return Err(SteeringError::CpuSet { allowed });
    }
    Ok(allowed.len())
}

/// Loads the steering program and attaches it to the TUN behind `queue`
/// (any of its queues). The returned descriptor keeps the program visible
/// in `/proc/<pid>/fd` for as long as the caller holds it; the TUN holds
/// its own reference.
pub fn attach(queue: &impl AsRawFd) -> Result<OwnedFd, SteeringError> {
    let prog = load().map_err(os("loading the steering eBPF program (needs CAP_BPF)"))?;
    let fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads one int (the program fd) through
    // the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(queue.as_raw_fd(), TUNSETSTEERINGEBPF, &fd) };
    if rc < 0 {
        return Err(os("attaching the steering program to the TUN")(
            io::Error::last_os_error(),
        ));
    }
    Ok(prog)
}

fn load() -> io::Result<OwnedFd> {
    let license = c"GPL";
    // `union bpf_attr` for BPF_PROG_LOAD: prog_type, insn_cnt, insns,
    // license; everything after stays zero.
    let mut attr = [0u8; ATTR_LEN];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes());
    attr[4..8].copy_from_slice(&(PROGRAM.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(PROGRAM.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: `attr` is a zero-padded bpf_attr whose pointers (program,
    // license) outlive the call; the kernel copies what it needs.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            ATTR_LEN as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The CPUs the calling thread may run on, ascending.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is valid for the call.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below the set's size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "CPU number too large",
        ));
    }
    // SAFETY: cpu_set_t is plain data, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is checked against the set's size above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is valid for the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_may_run_somewhere() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn pinning_a_thread_changes_its_affinity() {
        let first = allowed_cpus().unwrap()[0];
        let got = std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, vec![first]);
        assert!(pin_current_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
