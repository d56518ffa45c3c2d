//! CPU-aware queue steering for the TUN (`datapath.steering: cpu` and
//! `hybrid`): an eBPF program picks each packet's queue from the CPU the
//! packet is being processed on, and worker `i` is pinned to CPU `i`.
//!
//! Why: a worker sleeping on an idle vCPU costs tens of microseconds to
//! wake here (the host has to run the vCPU again; docs/datapath.md,
//! Latency), and a ping crosses several such wake-ups. When the packet's
//! CPU and the worker's CPU are the same, each is a local context switch.
//!
//! * `cpu`: every packet to the queue of its own CPU.
//! * `hybrid`: small packets (≤ [`SMALL_LEN`] bytes: pings, ACKs,
//!   requests) to their own CPU's queue, larger ones (full-size segments,
//!   GSO super-packets: bulk) to another CPU's, so a bulk sender and its
//!   sealing run in parallel as with flow steering.
#![allow(unsafe_code)] // bpf(2), ioctl(2), sched_{get,set}affinity(2) only.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use thiserror::Error;

use crate::config::Steering;

/// `_IOR('T', 224, int)`: attach a steering eBPF program to a TUN.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// Size of the `union bpf_attr` prefix we fill (the kernel requires the
/// rest of what we pass to be zero).
const ATTR_LEN: usize = 128;

/// Largest packet (IP length; a GSO super-packet counts whole) `hybrid`
/// keeps on its own CPU. Above pings (84 bytes), pure ACKs (52-92 with
/// SACK blocks), DNS and small requests; below every full-size segment
/// the tunnel carries on any underlay that can carry IPv6 (MTU ≥ 1280,
/// so inner MTU ≥ ~1200 after ESP-in-UDP), so bulk data never counts as
/// small, and every super-packet is larger than the MTU anyway.
pub const SMALL_LEN: u32 = 1024;

/// `struct __sk_buff` offsets (include/uapi/linux/bpf.h) a socket filter
/// may read.
const SKB_LEN: i16 = 0;
const SKB_HASH: i16 = 68;

/// One `struct bpf_insn` (little-endian): opcode, dst and src registers,
/// offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | ((dst as u64 & 0xf) << 8)
        | ((src as u64 & 0xf) << 12)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

// Opcodes used below (class | operation | source).
/// BPF_JMP | BPF_CALL.
const CALL: u8 = 0x85;
/// BPF_JMP | BPF_EXIT.
const EXIT: u8 = 0x95;
/// BPF_ALU64 | BPF_MOV | BPF_X: dst = src.
const MOV64_REG: u8 = 0xbf;
/// BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off).
const LDX_W: u8 = 0x61;
/// BPF_JMP | BPF_JLE | BPF_K: if dst <= imm (unsigned) skip `off` insns.
const JLE_IMM: u8 = 0xb5;
/// BPF_ALU64 | BPF_MOD | BPF_K: dst %= imm (unsigned).
const MOD64_IMM: u8 = 0x97;
/// BPF_ALU64 | BPF_ADD | BPF_X: dst += src.
const ADD64_REG: u8 = 0x0f;
/// BPF_ALU64 | BPF_ADD | BPF_K: dst += imm.
const ADD64_IMM: u8 = 0x07;
/// Helper number of `bpf_get_smp_processor_id`.
const GET_SMP_PROCESSOR_ID: i32 = 8;

/// `cpu`: `r0 = bpf_get_smp_processor_id(); return r0;`. The TUN takes
/// the result modulo its number of queues (16 bits of it).
const CPU_PROGRAM: [u64; 2] = [
    insn(CALL, 0, 0, 0, GET_SMP_PROCESSOR_ID),
    insn(EXIT, 0, 0, 0, 0),
];

/// `hybrid` for `queues` queues (one per CPU, ≥ 2): small packets to
/// queue `cpu`, others to `cpu + 1 + hash % (queues - 1)` (mod `queues`,
/// done by the TUN): one of the *other* CPUs, chosen by the flow hash
/// when the skb carries one (a TCP socket's `sk_txhash` survives veths
/// and forwarding) and the next CPU when it does not (hash 0). With 2
/// CPUs that is always the other one.
fn hybrid_program(queues: u32) -> [u64; 9] {
    [
        // r6 = r1: keep the context (`struct __sk_buff *`); calls clobber r1-r5.
        insn(MOV64_REG, 6, 1, 0, 0),
        // r0 = bpf_get_smp_processor_id().
        insn(CALL, 0, 0, 0, GET_SMP_PROCESSOR_ID),
        // r2 = skb->len (the whole super-packet for GSO).
        insn(LDX_W, 2, 6, SKB_LEN, 0),
        // if r2 <= SMALL_LEN: skip the 4 insns below, return this CPU.
        insn(JLE_IMM, 2, 0, 4, SMALL_LEN as i32),
        // r2 = skb->hash (0 when nothing computed one).
        insn(LDX_W, 2, 6, SKB_HASH, 0),
        // r2 %= queues - 1: which of the other CPUs (the verifier rejects
        // a constant divisor of 0, hence queues ≥ 2).
        insn(MOD64_IMM, 2, 0, 0, queues.saturating_sub(1) as i32),
        // r0 += r2.
        insn(ADD64_REG, 0, 2, 0, 0),
        // r0 += 1: never this CPU.
        insn(ADD64_IMM, 0, 0, 0, 1),
        // return r0.
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The steering program for `mode` and `queues` queues; `None` for flow
/// steering (the TUN's own).
pub fn program(mode: Steering, queues: usize) -> Option<Vec<u64>> {
    match mode {
        Steering::Flow => None,
        // With one CPU there is no other CPU: all to queue 0.
        Steering::Cpu => Some(CPU_PROGRAM.to_vec()),
        Steering::Hybrid if queues < 2 => Some(CPU_PROGRAM.to_vec()),
        Steering::Hybrid => {
            let q = u32::try_from(queues)
                .unwrap_or(u32::MAX)
                .min(i32::MAX as u32);
            Some(hybrid_program(q).to_vec())
        }
    }
}

/// Why CPU steering could not be set up.
#[derive(Debug, Error)]
pub enum SteeringError {
    /// The queue-per-CPU mapping needs CPUs 0..n-1.
    #[error(
        "datapath.steering: cpu and hybrid need the sidecar allowed on CPUs 0..{}, it is allowed on {allowed:?}; use steering: flow",
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

/// Loads `program` and attaches it to the TUN behind `queue` (any of its
/// queues). The returned descriptor keeps the program visible in
/// `/proc/<pid>/fd` for as long as the caller holds it; the TUN holds its
/// own reference.
pub fn attach(queue: &impl AsRawFd, program: &[u64]) -> Result<OwnedFd, SteeringError> {
    let prog = load(program).map_err(os("loading the steering eBPF program (needs CAP_BPF)"))?;
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

fn load(program: &[u64]) -> io::Result<OwnedFd> {
    let license = c"GPL";
    // `union bpf_attr` for BPF_PROG_LOAD: prog_type, insn_cnt, insns,
    // license; everything after stays zero.
    let mut attr = [0u8; ATTR_LEN];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes());
    let insns = u32::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?;
    attr[4..8].copy_from_slice(&insns.to_ne_bytes());
    attr[8..16].copy_from_slice(&(program.as_ptr() as u64).to_ne_bytes());
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

    const BPF_PROG_TEST_RUN: libc::c_long = 10;

    /// Runs `prog` once (BPF_PROG_TEST_RUN) on an IPv4 packet of `len`
    /// bytes, as the TUN would see it, on the calling thread's CPU;
    /// returns the program's result.
    fn run(prog: &OwnedFd, len: usize) -> u32 {
        // The kernel builds the skb from an Ethernet frame and pulls the
        // Ethernet header: skb->len is `len`.
        let mut frame = vec![0u8; 14 + len];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame[14] = 0x45;
        // `union bpf_attr` for BPF_PROG_TEST_RUN: prog_fd, retval,
        // data_size_in, data_size_out, data_in; the rest zero.
        let mut attr = [0u8; ATTR_LEN];
        attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
        // SAFETY: `attr` is a zero-padded bpf_attr whose data pointer
        // outlives the call; no output buffers are given.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                attr.as_mut_ptr(),
                ATTR_LEN as libc::c_uint,
            )
        };
        assert_eq!(rc, 0, "test run: {}", io::Error::last_os_error());
        u32::from_ne_bytes(attr[4..8].try_into().unwrap())
    }

    /// On each CPU `cpu` (thread pinned there): the queue the TUN would
    /// pick (result mod `queues`) for a packet of each length.
    fn queues_picked(mode: Steering, queues: usize, lens: &[usize]) -> Vec<Vec<usize>> {
        let prog = program(mode, queues).unwrap();
        let cpus = allowed_cpus().unwrap();
        cpus.into_iter()
            .map(|cpu| {
                let prog = &prog;
                std::thread::scope(|s| {
                    s.spawn(move || {
                        pin_current_thread(cpu).unwrap();
                        // The kernel's verifier must accept it.
                        let fd = load(prog).unwrap();
                        lens.iter()
                            .map(|&l| run(&fd, l) as usize % queues)
                            .collect()
                    })
                    .join()
                    .unwrap()
                })
            })
            .collect()
    }

    #[test]
    fn cpu_program_picks_the_packets_cpu() {
        let cpus = allowed_cpus().unwrap();
        let n = cpus.len().max(2);
        let got = queues_picked(Steering::Cpu, n, &[84, 1500, 3000]);
        for (cpu, picked) in cpus.iter().zip(got) {
            assert_eq!(picked, vec![*cpu % n; 3], "on CPU {cpu}");
        }
    }

    #[test]
    fn hybrid_keeps_small_packets_local_and_moves_large_ones() {
        let cpus = allowed_cpus().unwrap();
        let lens = [
            40,
            84,
            SMALL_LEN as usize,
            SMALL_LEN as usize + 1,
            1500,
            3000,
        ];
        // Whatever the number of queues (test runs have no flow hash, so a
        // large packet goes to the next CPU's queue).
        for n in 2..=5 {
            let got = queues_picked(Steering::Hybrid, n, &lens);
            for (cpu, picked) in cpus.iter().zip(got) {
                let (here, next) = (cpu % n, (cpu + 1) % n);
                assert_eq!(
                    picked,
                    vec![here, here, here, next, next, next],
                    "{n} queues, on CPU {cpu}"
                );
            }
        }
    }

    #[test]
    fn hybrid_with_one_queue_is_cpu_steering() {
        assert_eq!(
            program(Steering::Hybrid, 1).unwrap(),
            program(Steering::Cpu, 1).unwrap()
        );
        assert!(program(Steering::Flow, 2).is_none());
    }
}
