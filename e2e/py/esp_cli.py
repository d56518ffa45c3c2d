"""Locate (building if needed) the meshsec-sidecar binary and run its
`esp seal|open` debug commands."""

import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def target_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def build_sidecar() -> pathlib.Path:
    """Builds the debug binary once (cargo is a no-op when up to date)."""
    subprocess.run(
        ["cargo", "build", "-q", "-p", "meshsec-sidecar"],
        cwd=REPO,
        check=True,
        timeout=1800,
    )
    binary = target_dir() / "debug" / "meshsec-sidecar"
    assert binary.exists(), f"no binary at {binary}"
    return binary


def esp(binary: pathlib.Path, op: str, packet: bytes, *, cipher: str, key: bytes, spi: int,
        seq: int, mode: str = "transport", udp_encap: bool = False, tunnel=None):
    """Runs `esp <op>`; returns (returncode, stdout bytes, stderr text)."""
    args = [str(binary), "esp", op, "--cipher", cipher, "--key", key.hex(),
            "--spi", str(spi), "--seq", str(seq), "--mode", mode]
    if udp_encap:
        args.append("--udp-encap")
    if tunnel:
        args += ["--tunnel-src", tunnel[0], "--tunnel-dst", tunnel[1]]
    r = subprocess.run(args, input=packet, capture_output=True, timeout=30)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")
