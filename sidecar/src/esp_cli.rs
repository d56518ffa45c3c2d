//! `meshsec-sidecar esp seal|open`: one raw IP packet on stdin, one on
//! stdout, for people debugging captures and for interop tests against
//! independent ESP implementations.

use std::io::{Read, Write};
use std::net::IpAddr;

use anyhow::{Context, bail};
use meshsec_esp::{
    ByteTally, Cipher, Encap, HEADROOM, InboundSa, Mode, OpenError, OutboundSa, SaKey, TAILROOM,
};
use zeroize::Zeroizing;

/// Largest packet read from stdin (IPv4/IPv6 length fields are 16-bit).
const MAX_PACKET: usize = 65535 + 40;
/// Exit status of `esp open` for a packet the SA rejects (1 is left for
/// usage and I/O errors).
const EXIT_REJECTED: i32 = 2;

/// ESP debugging commands.
#[derive(Debug, clap::Args)]
pub struct EspArgs {
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, clap::Subcommand)]
enum Op {
    /// Seal the plaintext IP packet on stdin; write the ESP packet to stdout.
    Seal {
        #[command(flatten)]
        sa: SaFlags,
        /// 64-bit sequence number to use.
        #[arg(long, default_value_t = 1)]
        seq: u64,
    },
    /// Open the ESP packet on stdin; write the plaintext packet to stdout.
    /// A rejected packet exits with status 2 and one line on stderr:
    /// `esp open: rejected: <label> (<reason>)`.
    Open {
        #[command(flatten)]
        sa: SaFlags,
        /// The 64-bit sequence number the receiver expects next (the ESN
        /// high bits are inferred from it, RFC 4303 Appendix A).
        #[arg(long, default_value_t = 1)]
        seq: u64,
        /// Anti-replay window size.
        #[arg(long, default_value_t = 1024)]
        replay_window: u32,
    },
}

#[derive(Debug, clap::Args)]
struct SaFlags {
    /// aes128gcm | aes256gcm | aes128gmac
    #[arg(long, default_value = "aes128gcm")]
    cipher: Cipher,
    /// Hex of the key material: AES key || 4-byte salt (20 or 36 bytes).
    #[arg(long)]
    key: String,
    /// SPI, decimal or 0x-prefixed hex.
    #[arg(long, value_parser = parse_u32)]
    spi: u32,
    /// ESP mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Transport)]
    mode: ModeArg,
    /// UDP encapsulation (RFC 3948).
    #[arg(long)]
    udp_encap: bool,
    /// UDP source port (with --udp-encap).
    #[arg(long, default_value_t = meshsec_esp::NAT_T_PORT)]
    sport: u16,
    /// UDP destination port (with --udp-encap).
    #[arg(long, default_value_t = meshsec_esp::NAT_T_PORT)]
    dport: u16,
    /// Outer source address (tunnel mode).
    #[arg(long)]
    tunnel_src: Option<IpAddr>,
    /// Outer destination address (tunnel mode).
    #[arg(long)]
    tunnel_dst: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Transport,
    Tunnel,
}

impl SaFlags {
    fn mode(&self) -> Mode {
        match self.mode {
            ModeArg::Transport => Mode::Transport,
            ModeArg::Tunnel => Mode::Tunnel,
        }
    }

    fn encap(&self) -> Encap {
        if self.udp_encap {
            Encap::Udp {
                sport: self.sport,
                dport: self.dport,
            }
        } else {
            Encap::None
        }
    }

    fn tunnel(&self) -> anyhow::Result<Option<(IpAddr, IpAddr)>> {
        match (self.tunnel_src, self.tunnel_dst) {
            (Some(s), Some(d)) => Ok(Some((s, d))),
            (None, None) => Ok(None),
            _ => bail!("--tunnel-src and --tunnel-dst go together"),
        }
    }

    fn key(&self) -> anyhow::Result<SaKey> {
        let clean: String = self
            .key
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        let bytes = Zeroizing::new(hex::decode(clean).context("--key is not hex")?);
        Ok(SaKey::from_bytes(&bytes)?)
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

/// Runs `esp seal` or `esp open`.
pub fn run(args: EspArgs) -> anyhow::Result<()> {
    let input = read_stdin()?;
    let output = match args.op {
        Op::Seal { sa, seq } => seal(&sa, seq, &input)?,
        Op::Open {
            sa,
            seq,
            replay_window,
        } => match open(&sa, seq, replay_window, &input)? {
            Ok(plain) => plain,
            Err(e) => {
                // One line, no backtrace: this is the answer, not a failure
                // of the tool.
                eprintln!("esp open: rejected: {} ({e})", e.as_label());
                std::process::exit(EXIT_REJECTED);
            }
        },
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&output).context("writing stdout")?;
    out.flush().context("writing stdout")?;
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_PACKET as u64 + 1)
        .read_to_end(&mut input)
        .context("reading stdin")?;
    if input.len() > MAX_PACKET {
        bail!(
            "stdin holds more than one IP packet ({} bytes max)",
            MAX_PACKET
        );
    }
    Ok(input)
}

fn seal(sa: &SaFlags, seq: u64, packet: &[u8]) -> anyhow::Result<Vec<u8>> {
    let out = OutboundSa::new(
        sa.spi,
        sa.cipher,
        sa.key()?,
        sa.mode(),
        sa.encap(),
        sa.tunnel()?,
    )?
    .with_next_seq(seq)?;
    let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
    // One packet, then the SA is dropped: its byte count is never read.
    let mut tally = ByteTally::default();
    let range = out
        .seal(&mut buf, HEADROOM..HEADROOM + packet.len(), &mut tally)
        .map_err(|e| anyhow::anyhow!("seal refused: {} ({e})", e.as_label()))?;
    Ok(buf[range].to_vec())
}

/// Outer error: bad flags; inner error: the packet was rejected.
fn open(
    sa: &SaFlags,
    seq: u64,
    window: u32,
    packet: &[u8],
) -> anyhow::Result<Result<Vec<u8>, OpenError>> {
    let inb = InboundSa::new(sa.spi, sa.cipher, sa.key()?, sa.mode(), sa.encap(), window)?
        .expect_next(seq)?;
    let mut buf = packet.to_vec();
    Ok(inb.open(&mut buf, 0..packet.len()).map(|r| buf[r].to_vec()))
}
