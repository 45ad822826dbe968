//! The machine's packages that a command needs: found, installed with
//! Debian's `apt-get` when xtask runs as root (as on CI and a fresh
//! machine), or named with the exact command to run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Something a command needs from the machine: the Debian package that
/// brings it and how to tell that it is there.
#[derive(Clone, Copy)]
pub struct Need {
    pub package: &'static str,
    /// What it is for, in the message when it cannot be installed.
    why: &'static str,
    present: fn() -> bool,
}

pub const PYTHON_VENV: Need = Need {
    package: "python3-venv",
    why: "moto, the AWS endpoint, in .venv",
    // Debian's python3 lacks `ensurepip` (venv fails) without it.
    present: || {
        Command::new("python3").args(["-c", "import ensurepip, venv"]).output().is_ok_and(|o| o.status.success())
    },
};
pub const CHROMIUM: Need = Need {
    package: "chromium",
    why: "the status page test opens it headless",
    present: || ["chromium", "chromium-browser", "google-chrome"].iter().any(|c| on_path(c).is_some()),
};
pub const CURL: Need =
    Need { package: "curl", why: "the compose healthcheck test", present: || on_path("curl").is_some() };
pub const SSHD: Need = Need {
    package: "openssh-server",
    why: "the SFTP tests run an sshd of their own",
    present: || ["/usr/sbin/sshd", "/usr/local/sbin/sshd"].iter().any(|p| Path::new(p).is_file()),
};
pub const SSH_KEYGEN: Need = Need {
    package: "openssh-client",
    why: "the SFTP tests make keys with ssh-keygen",
    present: || on_path("ssh-keygen").is_some(),
};
pub const PSQL: Need = Need {
    package: "postgresql-client",
    why: "psql: the demo makes its table with it, a test applies `host sink ddl` with it",
    present: || on_path("psql").is_some(),
};
pub const NODE: Need = Need {
    package: "nodejs",
    why: "JavaScript plugins: the SDK's tests and the component build (componentize-js)",
    present: || on_path("node").is_some(),
};
pub const NPM: Need = Need {
    package: "npm",
    why: "JavaScript plugins: installs the pinned build tools",
    present: || on_path("npm").is_some(),
};
pub const POSTGRESQL: Need = Need {
    package: "postgresql",
    why: "the private PostgreSQL's initdb and server (the cluster it makes is not started)",
    present: || crate::postgres::bindir().is_some(),
};
pub const PGBOUNCER: Need = Need {
    package: "pgbouncer",
    why: "the lease tests run a PgBouncer of their own in transaction mode in front of PostgreSQL",
    present: || ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].iter().any(|p| Path::new(p).is_file()),
};
pub const OPENSSL: Need = Need {
    package: "openssl",
    why: "the private PostgreSQL's TLS certificate",
    present: || on_path("openssl").is_some(),
};

/// `name` in a folder of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The effective user id (from `/proc`; 0 is root).
pub fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Makes sure every one of `needs` is there: installs the missing ones
/// when running as root where `apt-get` is (one `apt-get update`, then one
/// install that starts no service), else says what to run.
pub fn ensure(needs: &[Need]) -> Result<(), String> {
    let missing: Vec<Need> = needs.iter().copied().filter(|n| !(n.present)()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|n| n.package).collect();
    let install = format!("apt-get install -y --no-install-recommends {}", names.join(" "));
    let list: String = missing.iter().map(|n| format!("\n  {}: {}", n.package, n.why)).collect();
    if euid() != Some(0) || on_path("apt-get").is_none() {
        let how = if on_path("apt-get").is_some() {
            format!("run: sudo apt-get update && sudo {install}")
        } else {
            "install them with your system's package manager (these are Debian's names)".to_string()
        };
        return Err(format!("this machine lacks what the command needs:{list}\n{how}"));
    }
    println!("xtask: installing {} ({install}){list}", names.join(", "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    apt_install(&names)?;
    let still: Vec<&str> = missing.iter().filter(|n| !(n.present)()).map(|n| n.package).collect();
    if still.is_empty() { Ok(()) } else { Err(format!("installed, yet still missing: {}", still.join(", "))) }
}

/// `apt-get install` with a `policy-rc.d` that keeps services from starting
/// (no system sshd on port 22, no system PostgreSQL cluster started).
fn apt_install(names: &[&str]) -> Result<(), String> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let made = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if made {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755));
    }
    let result = run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(names));
    if made {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed ({status})")) }
}
