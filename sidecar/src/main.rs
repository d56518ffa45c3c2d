//! meshsec sidecar: per-node userspace ESP datapath.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cidr;
mod config;
mod daemon;
mod datapath;
mod esp_cli;
mod generation;
mod http;
mod keys;
mod lpm;
mod metrics;
mod netlink;
mod steering;
mod tun;

#[derive(Debug, Parser)]
#[command(name = "meshsec-sidecar", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the datapath from a static configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a new X25519 private key (or, with --psk, a pre-shared key) to
    /// a file that must not exist yet; prints the public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        psk: bool,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Seal or open one ESP packet (stdin to stdout), for debugging captures.
    Esp(esp_cli::EspArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run { config } => {
            let cfg = config::Config::load(&config)?;
            daemon::run(cfg)
        }
        Command::Keygen { out, psk } => {
            if let Some(public) =
                keys::generate(&out, psk).with_context(|| format!("keygen {}", out.display()))?
            {
                println!("{public}");
            }
            Ok(())
        }
        Command::Esp(args) => esp_cli::run(args),
        Command::CheckConfig { config } => {
            config::Config::load(&config)?;
            println!("ok");
            Ok(())
        }
    }
}
