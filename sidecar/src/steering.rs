//! CPU-aware queue steering for the TUN (`datapath.steering: hybrid`): an
//! eBPF program picks each packet's queue, small ones from the CPU the
//! packet is being processed on, and worker `i` is pinned to CPU `i`.
//!
//! Why: a worker sleeping on an idle vCPU costs tens of microseconds to
//! wake here (the host has to run the vCPU again; docs/datapath.md,
//! Latency), and a ping crosses several such wake-ups. When the packet's
//! CPU and the worker's CPU are the same, each is a local context switch.
//!
//! * `hybrid`: small packets (≤ [`SMALL_LEN`] bytes: pings, ACKs,
//!   requests) to their own CPU's queue, larger ones (full-size segments,
//!   GSO super-packets: bulk) to their flow's queue (plaintext) or their
//!   peer's (ESP), so a bulk flow is sealed and opened by one worker
//!   each, in order, rather than on its sender's CPU.
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
/// BPF_JMP | BPF_JEQ | BPF_K: if dst == imm skip `off` insns.
const JEQ_IMM: u8 = 0x15;
/// BPF_JMP | BPF_JNE | BPF_K: if dst != imm skip `off` insns.
const JNE_IMM: u8 = 0x55;
/// BPF_JMP | BPF_JA: skip `off` insns.
const JA: u8 = 0x05;
/// BPF_ALU64 | BPF_AND | BPF_K: dst &= imm.
const AND64_IMM: u8 = 0x57;
/// BPF_ALU64 | BPF_LSH | BPF_K: dst <<= imm.
const LSH64_IMM: u8 = 0x67;
/// BPF_ALU64 | BPF_RSH | BPF_K: dst >>= imm (logical).
const RSH64_IMM: u8 = 0x77;
/// BPF_LD | BPF_ABS | BPF_B: r0 = the packet byte at imm.
const LD_ABS_B: u8 = 0x30;
/// BPF_LD | BPF_ABS | BPF_H: r0 = the 16 bits at imm (host order).
const LD_ABS_H: u8 = 0x28;
/// BPF_LD | BPF_IND | BPF_H: r0 = the 16 bits at src + imm (host order).
const LD_IND_H: u8 = 0x48;
/// BPF_LD | BPF_ABS | BPF_W: r0 = the 32 bits at imm (host order).
const LD_ABS_W: u8 = 0x20;
/// BPF_ALU | BPF_MUL | BPF_K: w0 *= imm (32 bits, upper half cleared).
const MUL32_IMM: u8 = 0x24;
/// BPF_ALU | BPF_RSH | BPF_K: w0 >>= imm (32 bits).
const RSH32_IMM: u8 = 0x74;
/// Packet offsets from `SKF_NET_OFF` on are relative to the network
/// (IP) header.
const SKF_NET_OFF: i32 = -0x0010_0000;
const IPPROTO_ESP: i32 = 50;
const IPPROTO_UDP: i32 = 17;
/// Helper number of `bpf_get_smp_processor_id`.
const GET_SMP_PROCESSOR_ID: i32 = 8;

/// `hybrid`, for ESP-in-UDP on `udp_port` (`None`: raw ESP only):
///
/// * ≤ [`SMALL_LEN`] bytes: queue `cpu`, `bpf_get_smp_processor_id()`;
/// * larger ESP from a peer (IP protocol 50, or UDP to `udp_port`): the
///   peer's queue, whatever CPU it came in on: `(src × PEER_HASH mod
///   2^32) >> 16`, `src` the last 32 bits of the outer source address.
///   One SA (per peer and direction) must be opened by one worker, in
///   arrival order: its packets carry one sequence, and a packet that
///   another worker leaves more than the replay window behind is dropped
///   (small ESP packets still take their CPU's queue: the default window
///   of 8192 covers that drift, 1024 did not, docs/datapath.md);
/// * any other larger packet (plaintext to seal): queue `skb->hash`, the
///   flow's queue, whatever CPU it is on. `skb->hash` is the sending TCP
///   socket's `sk_txhash` (it survives veths, bridges and forwarding), 0
///   when nothing set one (then queue 0). One flow, one worker: its
///   segments are sealed in order.
///
/// The TUN takes the result modulo its number of queues (low 16 bits).
/// Earlier versions and why they were dropped (docs/datapath.md,
/// Latency): the former `cpu` mode (every packet to its CPU's queue) and
/// "another CPU" (`cpu + 1`) for all large packets split a
/// TCP flow over workers (a sender transmits from the application's CPU
/// and from the CPU that processes its ACKs); `cpu + 1` for large ESP
/// split a peer's SA over workers as soon as two flows were sealed on
/// two CPUs.
///
/// Packet bytes are read with `BPF_LD_ABS`/`BPF_LD_IND` relative to the
/// network header (`SKF_NET_OFF`); they return the value in host byte
/// order, and end the program with result 0 (queue 0) when out of bounds.
fn hybrid_program(udp_port: Option<u16>) -> [u64; 33] {
    // No UDP port equals -1 (the comparison is on 64 bits).
    let port = udp_port.map_or(-1, i32::from);
    [
        // 0: r6 = r1: keep the context (`struct __sk_buff *`); calls
        // clobber r1-r5, and BPF_LD_ABS/IND read the skb through r6.
        insn(MOV64_REG, 6, 1, 0, 0),
        // 1: r0 = bpf_get_smp_processor_id().
        insn(CALL, 0, 0, 0, GET_SMP_PROCESSOR_ID),
        // 2: r7 = r0: this CPU (loads clobber r0).
        insn(MOV64_REG, 7, 0, 0, 0),
        // 3: r2 = skb->len (IP length; a GSO super-packet counts whole).
        insn(LDX_W, 2, 6, SKB_LEN, 0),
        // 4: if r2 <= SMALL_LEN goto 31 (this CPU).
        insn(JLE_IMM, 2, 0, 26, SMALL_LEN as i32),
        // 5: r0 = first IP byte (version, IPv4 header length).
        insn(LD_ABS_B, 0, 0, 0, SKF_NET_OFF),
        // 6: r0 >>= 4: the IP version.
        insn(RSH64_IMM, 0, 0, 0, 4),
        // 7: if r0 == 6 goto 18 (IPv6).
        insn(JEQ_IMM, 0, 0, 10, 6),
        // 8: r0 = IPv4 protocol.
        insn(LD_ABS_B, 0, 0, 0, SKF_NET_OFF + 9),
        // 9: if r0 == ESP goto 25 (IPv4 peer).
        insn(JEQ_IMM, 0, 0, 15, IPPROTO_ESP),
        // 10: if r0 != UDP goto 23 (the flow's queue).
        insn(JNE_IMM, 0, 0, 12, IPPROTO_UDP),
        // 11: r0 = first IP byte again.
        insn(LD_ABS_B, 0, 0, 0, SKF_NET_OFF),
        // 12: r0 &= 0xf: IPv4 header length in 32-bit words.
        insn(AND64_IMM, 0, 0, 0, 0xf),
        // 13: r0 <<= 2: in bytes.
        insn(LSH64_IMM, 0, 0, 0, 2),
        // 14: r8 = r0: where the UDP header starts.
        insn(MOV64_REG, 8, 0, 0, 0),
        // 15: r0 = 16 bits at r8 + 2: the UDP destination port.
        insn(LD_IND_H, 0, 8, 0, SKF_NET_OFF + 2),
        // 16: if r0 == udp_port goto 25 (IPv4 peer).
        insn(JEQ_IMM, 0, 0, 8, port),
        // 17: goto 23 (the flow's queue).
        insn(JA, 0, 0, 5, 0),
        // 18: r0 = IPv6 next header (ESP or UDP follow the fixed header
        // directly; extension headers take the flow's queue).
        insn(LD_ABS_B, 0, 0, 0, SKF_NET_OFF + 6),
        // 19: if r0 == ESP goto 27 (IPv6 peer).
        insn(JEQ_IMM, 0, 0, 7, IPPROTO_ESP),
        // 20: if r0 != UDP goto 23 (the flow's queue).
        insn(JNE_IMM, 0, 0, 2, IPPROTO_UDP),
        // 21: r0 = 16 bits at 40 + 2: the UDP destination port.
        insn(LD_ABS_H, 0, 0, 0, SKF_NET_OFF + 42),
        // 22: if r0 == udp_port goto 27 (IPv6 peer).
        insn(JEQ_IMM, 0, 0, 4, port),
        // 23: r0 = skb->hash: the flow's queue.
        insn(LDX_W, 0, 6, SKB_HASH, 0),
        // 24: return r0.
        insn(EXIT, 0, 0, 0, 0),
        // 25: r0 = IPv4 source address.
        insn(LD_ABS_W, 0, 0, 0, SKF_NET_OFF + 12),
        // 26: goto 28 (hash it).
        insn(JA, 0, 0, 1, 0),
        // 27: r0 = last 32 bits of the IPv6 source address.
        insn(LD_ABS_W, 0, 0, 0, SKF_NET_OFF + 20),
        // 28: w0 *= PEER_HASH (32-bit): Fibonacci hashing ...
        insn(MUL32_IMM, 0, 0, 0, PEER_HASH as i32),
        // 29: w0 >>= 16: ... keeps the product's well-mixed top half.
        insn(RSH32_IMM, 0, 0, 0, 16),
        // 30: return r0.
        insn(EXIT, 0, 0, 0, 0),
        // 31: r0 = r7: this CPU.
        insn(MOV64_REG, 0, 7, 0, 0),
        // 32: return r0.
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// Multiplier of the peer hash: 2^32 / golden ratio.
const PEER_HASH: u32 = 0x9e37_79b1;

/// The steering program for `mode` (`udp_port`: the ESP-in-UDP port,
/// `None` for raw ESP); `None` for flow steering (the TUN's own).
pub fn program(mode: Steering, udp_port: Option<u16>) -> Option<Vec<u64>> {
    match mode {
        Steering::Flow => None,
        Steering::Hybrid => Some(hybrid_program(udp_port).to_vec()),
    }
}

/// Why CPU steering could not be set up.
#[derive(Debug, Error)]
pub enum SteeringError {
    /// The queue-per-CPU mapping needs CPUs 0..n-1.
    #[error(
        "datapath.steering: hybrid needs the sidecar allowed on CPUs 0..{}, it is allowed on {allowed:?}; use steering: flow",
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

    /// Runs `prog` once (BPF_PROG_TEST_RUN) on the IP packet `ip`, as the
    /// TUN would see it, on the calling thread's CPU; returns the
    /// program's result.
    fn run(prog: &OwnedFd, ip: &[u8]) -> u32 {
        // The kernel builds the skb from an Ethernet frame, pulls the
        // Ethernet header and sets the network header: skb->len is the
        // IP packet's length.
        let mut frame = vec![0u8; 14];
        let ethertype: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(ip);
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

    /// The queue `hybrid` gives large ESP from a peer whose source
    /// address ends in the 32 bits `src` (network order, read as a
    /// big-endian number), out of `queues`.
    fn peer_queue(src: u32, queues: usize) -> usize {
        ((src.wrapping_mul(PEER_HASH) >> 16) as usize) % queues
    }

    const PEER4: [u8; 4] = [192, 168, 77, 1];
    const PEER6_END: [u8; 4] = [0, 0, 0, 2];

    /// An IPv4 packet of `len` bytes from [`PEER4`], protocol `proto`,
    /// header of `ihl` words, UDP/TCP destination port `dport`.
    fn v4(proto: u8, dport: u16, len: usize, ihl: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x40 | ihl as u8;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&PEER4);
        p[ihl * 4 + 2..ihl * 4 + 4].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// An IPv6 packet of `len` bytes from fd77::…:[`PEER6_END`], next
    /// header `nh`, destination port `dport`.
    fn v6(nh: u8, dport: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = nh;
        p[8..10].copy_from_slice(&[0xfd, 0x77]);
        p[20..24].copy_from_slice(&PEER6_END);
        p[42..44].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// Where a packet should go, given the CPU it is on.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Here,
        /// The queue of a peer whose address ends in these 32 bits.
        Peer([u8; 4]),
        /// The flow's queue: a test run's skb has no hash, so queue 0.
        Flow,
    }

    /// On each CPU (thread pinned there), `mode`'s program must send each
    /// packet to the queue `want` says, for `queues` queues.
    fn check(
        mode: Steering,
        udp_port: Option<u16>,
        queues: usize,
        cases: &[(&str, Vec<u8>, Want)],
    ) {
        let prog = program(mode, udp_port).unwrap();
        for cpu in allowed_cpus().unwrap() {
            let prog = &prog;
            std::thread::scope(|s| {
                s.spawn(move || {
                    pin_current_thread(cpu).unwrap();
                    // The kernel's verifier must accept it.
                    let fd = load(prog).unwrap();
                    for (what, pkt, want) in cases {
                        let expect = match want {
                            Want::Here => cpu % queues,
                            Want::Peer(a) => peer_queue(u32::from_be_bytes(*a), queues),
                            Want::Flow => 0,
                        };
                        let got = run(&fd, pkt) as usize % queues;
                        assert_eq!(got, expect, "{mode:?}, {what}, CPU {cpu}");
                    }
                })
                .join()
                .unwrap()
            });
        }
    }

    fn queues() -> usize {
        allowed_cpus().unwrap().len().max(2)
    }

    /// `pkt` with its source address's last 32 bits set to `end`.
    fn from(mut pkt: Vec<u8>, end: [u8; 4]) -> Vec<u8> {
        let at = if pkt[0] >> 4 == 6 { 20 } else { 12 };
        pkt[at..at + 4].copy_from_slice(&end);
        pkt
    }

    #[test]
    fn hybrid_steers_small_packets_to_their_cpu_bulk_esp_by_peer_and_the_rest_by_flow() {
        let big = SMALL_LEN as usize + 1;
        let small = SMALL_LEN as usize;
        let (p4, p6) = (Want::Peer(PEER4), Want::Peer(PEER6_END));
        let cases = [
            ("v4 ping", v4(1, 0, 84, 5), Want::Here),
            ("v4 tcp small", v4(6, 80, small, 5), Want::Here),
            ("v4 esp-in-udp small", v4(17, 4500, 200, 5), Want::Here),
            ("v4 tcp large", v4(6, 80, big, 5), Want::Flow),
            ("v4 tcp super-packet", v4(6, 4500, 3000, 5), Want::Flow),
            ("v4 esp-in-udp", v4(17, 4500, 1500, 5), p4),
            ("v4 esp-in-udp, ip options", v4(17, 4500, 1500, 6), p4),
            ("v4 other udp", v4(17, 53, 1500, 5), Want::Flow),
            ("v4 raw esp", v4(50, 0, 1500, 5), p4),
            ("v6 ping", v6(58, 0, 104), Want::Here),
            ("v6 tcp large", v6(6, 80, 1500), Want::Flow),
            ("v6 esp-in-udp", v6(17, 4500, 1500), p6),
            ("v6 other udp", v6(17, 53, 1500), Want::Flow),
            ("v6 raw esp", v6(50, 0, 1500), p6),
        ];
        for n in [queues(), 3] {
            check(Steering::Hybrid, Some(4500), n, &cases);
        }
    }

    #[test]
    fn hybrid_spreads_peers_over_queues() {
        // 16 peers: every queue gets at least one, each the queue the
        // hash says, from every CPU.
        let n = queues();
        let peers: Vec<[u8; 4]> = (1..=16).map(|i| [10, 0, 0, i]).collect();
        let hit: std::collections::BTreeSet<usize> = peers
            .iter()
            .map(|p| peer_queue(u32::from_be_bytes(*p), n))
            .collect();
        assert_eq!(hit.len(), n, "{hit:?}");
        let cases: Vec<_> = peers
            .iter()
            .map(|p| ("peer", from(v4(17, 4500, 1500, 5), *p), Want::Peer(*p)))
            .collect();
        check(Steering::Hybrid, Some(4500), n, &cases);
    }

    #[test]
    fn hybrid_with_raw_esp_treats_udp_as_plaintext() {
        let cases = [
            ("v4 udp to 4500", v4(17, 4500, 1500, 5), Want::Flow),
            ("v6 udp to 4500", v6(17, 4500, 1500), Want::Flow),
            ("v4 raw esp", v4(50, 0, 1500, 5), Want::Peer(PEER4)),
            ("v4 udp small", v4(17, 4500, 100, 5), Want::Here),
        ];
        check(Steering::Hybrid, None, queues(), &cases);
    }

    #[test]
    fn flow_steering_has_no_program() {
        assert!(program(Steering::Flow, Some(4500)).is_none());
    }
}
