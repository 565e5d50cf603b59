//! `certs init|issue|show`: the cell's CA and credentials; local files only, no master.

use crate::cli::{CertsCmd, Cli};
use anyhow::anyhow;
use std::process::ExitCode;

/// `borgctl certs ...`: runs locally, touches only files.
pub fn certs(action: &CertsCmd, cli: &Cli) -> anyhow::Result<ExitCode> {
    use borg_rpc::auth::{init_ca, issue, Credentials, Identity, Role};
    match action {
        CertsCmd::Init { ca, cell } => {
            init_ca(ca, cell).map_err(|e| anyhow!("{e}"))?;
            outln!("cell CA created in {} (ca.pem; keep ca.key secret)", ca.display())?;
        }
        CertsCmd::Issue { ca, role, name, host, out } => {
            let id = Identity::new(Role::parse(role).map_err(|e| anyhow!("--role: {e}"))?, name.clone());
            let hosts: Vec<String> = host.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
            issue(ca, &id, &hosts, out).map_err(|e| anyhow!("{e}"))?;
            outln!("issued {} ({}) into {}", id, id.uri(), out.display())?;
        }
        CertsCmd::Show { dir } => {
            let dir = dir.clone().or_else(|| cli.credentials.clone()).ok_or_else(|| anyhow!("give a directory"))?;
            let c = Credentials::load(&dir).map_err(|e| anyhow!("{e}"))?;
            outln!("{} ({})", c.identity, c.identity.uri())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
