//! Talking to the real local control plane started by `e2e/cluster up`:
//! a kube client from `KUBECONFIG`, a `kubectl` runner, CRD installation,
//! unique object names and a cleanup guard.
//!
//! Every helper fails with a message that says what to do when the control
//! plane is not there, instead of a bare connection error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What a test should print when the control plane is missing.
pub const NOT_RUNNING: &str =
    "control plane not running: run `e2e/cluster up` and `eval \"$(e2e/cluster env)\"`";

/// Errors from the control-plane helpers.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// KUBECONFIG unset, missing, or the API server does not answer.
    #[error("{NOT_RUNNING} ({detail})")]
    NotRunning {
        /// What exactly was missing.
        detail: String,
    },
    /// kubectl could not be started.
    #[error("cannot run kubectl (is the PATH from `e2e/cluster env` set?): {0}")]
    NoKubectl(std::io::Error),
    /// kubectl ran and failed.
    #[error("`kubectl {args}` failed: {stderr}")]
    Kubectl {
        /// The arguments, joined.
        args: String,
        /// kubectl's stderr.
        stderr: String,
    },
    /// A condition did not hold in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Building the client failed.
    #[error("kube client: {0}")]
    Client(#[from] ::kube::Error),
}

/// Result of the helpers.
pub type Result<T, E = KubeError> = std::result::Result<T, E>;

/// The repository root (where `crds/` and `e2e/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The admin kubeconfig path from `KUBECONFIG`, checked to exist.
pub fn kubeconfig() -> Result<PathBuf> {
    let path = std::env::var_os("KUBECONFIG").ok_or_else(|| KubeError::NotRunning {
        detail: "KUBECONFIG is not set".into(),
    })?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(KubeError::NotRunning {
            detail: format!("KUBECONFIG={} does not exist", path.display()),
        });
    }
    Ok(path)
}

/// A client for the local control plane, checked to answer.
pub async fn client() -> Result<::kube::Client> {
    kubeconfig()?;
    let client = ::kube::Client::try_default()
        .await
        .map_err(|e| KubeError::NotRunning {
            detail: format!("cannot build a client from KUBECONFIG: {e}"),
        })?;
    client
        .apiserver_version()
        .await
        .map_err(|e| KubeError::NotRunning {
            detail: format!("API server does not answer: {e}"),
        })?;
    Ok(client)
}

/// What kubectl printed.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// Exit status was zero.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Run kubectl (from PATH) with `args`, feeding `stdin` if given. A non-zero
/// exit is not an error here: tests look at rejections on purpose.
pub fn kubectl_raw(args: &[&str], stdin: Option<&str>) -> Result<KubectlOutput> {
    kubeconfig()?;
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(KubeError::NoKubectl)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(KubeError::NoKubectl)?;
    }
    let out = child.wait_with_output().map_err(KubeError::NoKubectl)?;
    Ok(KubectlOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run kubectl and return its stdout; a non-zero exit is an error.
pub fn kubectl(args: &[&str]) -> Result<String> {
    checked(args, kubectl_raw(args, None)?)
}

/// Run kubectl with `stdin` (e.g. `apply -f -`); a non-zero exit is an error.
pub fn kubectl_stdin(args: &[&str], stdin: &str) -> Result<String> {
    checked(args, kubectl_raw(args, Some(stdin))?)
}

fn checked(args: &[&str], out: KubectlOutput) -> Result<String> {
    if out.success {
        Ok(out.stdout)
    } else {
        Err(KubeError::Kubectl {
            args: args.join(" "),
            stderr: out.stderr,
        })
    }
}

/// Retry `probe` every 200 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(KubeError::Timeout(timeout, what.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Names of the meshsec CRDs.
pub const CRD_NAMES: [&str; 2] = ["ipsectunnels.meshsec.io", "ipsecnodes.meshsec.io"];

/// `kubectl apply -f crds/` (the way users install them) and wait until both
/// CRDs are Established. Runs once per test process; later calls return the
/// first outcome.
pub fn ensure_crds() -> Result<(), String> {
    static ONCE: OnceLock<Result<(), String>> = OnceLock::new();
    ONCE.get_or_init(|| install_crds().map_err(|e| e.to_string()))
        .clone()
}

fn install_crds() -> Result<()> {
    let dir = repo_root().join("crds");
    let dir = dir.to_string_lossy();
    kubectl(&["apply", "-f", &dir])?;
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let crds: Vec<String> = CRD_NAMES.iter().map(|n| format!("crd/{n}")).collect();
    args.extend(crds.iter().map(String::as_str));
    kubectl(&args)?;
    Ok(())
}

/// A name no earlier run and no other test in this run has used:
/// `<prefix>-<pid>-<counter>-<time>` (lowercase, DNS-label safe, ≤ 63 chars
/// for prefixes up to 30 characters).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos % 0xFFFFF)
}

/// Deletes the objects it was told about when dropped, also when the test
/// panics. Deletion goes through kubectl (synchronous, so it works in
/// `Drop`) with `--ignore-not-found` and `--wait=false`.
#[derive(Debug, Default)]
pub struct Cleanup {
    objects: Vec<(String, String)>,
}

impl Cleanup {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remember `kind`/`name` (cluster-scoped, or `-n ns` style via `kind`
    /// being e.g. `"configmap -n ns"`) for deletion.
    pub fn add(&mut self, kind: &str, name: &str) {
        self.objects.push((kind.to_owned(), name.to_owned()));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (kind, name) in self.objects.drain(..).rev() {
            let mut args: Vec<&str> = vec!["delete"];
            args.extend(kind.split_whitespace());
            args.extend([name.as_str(), "--ignore-not-found", "--wait=false"]);
            if let Ok(out) = kubectl_raw(&args, None)
                && !out.success
            {
                eprintln!("cleanup: kubectl {} failed: {}", args.join(" "), out.stderr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_dns_labels() {
        let a = unique_name("crd-test");
        let b = unique_name("crd-test");
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                "{name}"
            );
        }
    }

    #[test]
    fn wait_for_returns_the_value_or_times_out() {
        let mut tries = 0;
        let got = wait_for("third try", Duration::from_secs(5), || {
            tries += 1;
            (tries == 3).then_some(tries)
        });
        assert_eq!(got.unwrap(), 3);
        let err = wait_for("never", Duration::from_millis(300), || None::<()>).unwrap_err();
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }
}
