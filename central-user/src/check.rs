//! `sluice-central check`: everything `run` would refuse, found without touching the data
//! plane: the file and its cross-references, interface names, the state dir and its state
//! file, the control API certificate and the HA credential. Systemd runs it as
//! `ExecStartPre=`, so a bad file fails the unit with the reason in the journal.

use std::path::Path;

use crate::api::{CertSource, TlsIdentity};
use crate::config::CentralConfig;
use crate::ha::link::Credential;
use crate::run::RunError;
use crate::state::StateStore;

type Result<T> = std::result::Result<T, RunError>;

/// Checks `cfg` (already parsed and validated) against this host. Returns one line per
/// check that passed; the first failure is the error.
pub fn check(cfg: &CentralConfig) -> Result<Vec<String>> {
    let mut ok = Vec::new();
    let mut ifaces: Vec<(String, &str)> = cfg
        .data_plane
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("data_plane.interfaces[{i}]"), n.as_str()))
        .collect();
    let vip_specs = match &cfg.ha {
        Some(ha) => ha.vip_specs()?,
        None => Vec::new(),
    };
    if let Some(ha) = &cfg.ha {
        let (me, partner) = ha.me_and_partner()?;
        ifaces.push(("ha.interface".into(), ha.interface.as_str()));
        for (i, v) in vip_specs.iter().enumerate() {
            if let Some(dev) = &v.dev {
                ifaces.push((format!("ha.vips[{i}]"), dev.as_str()));
            }
        }
        Credential::load(&ha.credential_file)?;
        ok.push(format!(
            "ha: node {} (priority {}), partner {} at {}, credential {} readable",
            me.name,
            me.priority,
            partner.name,
            partner.address,
            ha.credential_file.display()
        ));
    }
    for (key, name) in &ifaces {
        if !interface_exists(name) {
            return Err(RunError::Invalid(format!(
                "{key}: no interface named {name:?} on this host"
            )));
        }
    }
    if !ifaces.is_empty() {
        let names: Vec<&str> = ifaces.iter().map(|(_, n)| *n).collect();
        ok.push(format!("interfaces present: {}", names.join(", ")));
    }
    state_dir(&cfg.state.dir)?;
    match StateStore::new(&cfg.state.dir).load()? {
        Some(state) => ok.push(format!(
            "state: {} loads ({} pools, {} peers, {} exporters)",
            StateStore::new(&cfg.state.dir).path().display(),
            state.controller.pools.len(),
            state.controller.peers.len(),
            state.controller.exporters.len()
        )),
        None => ok.push(format!(
            "state: {} is writable, no state yet",
            cfg.state.dir.display()
        )),
    }
    if let (Some(cert), Some(key)) = (&cfg.control.cert, &cfg.control.key) {
        let id = TlsIdentity::load(&CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .map_err(RunError::Certificate)?;
        ok.push(format!("control certificate {}", id.fingerprint));
    }
    ok.push(format!(
        "{} listener sockets, {} static peers, {} pins, {} source groups",
        cfg.listener_addrs().len(),
        cfg.peers.len(),
        cfg.pins.len(),
        cfg.source_groups.len()
    ));
    Ok(ok)
}

fn interface_exists(name: &str) -> bool {
    std::ffi::CString::new(name)
        // SAFETY: a NUL-terminated string we own; if_nametoindex only reads it.
        .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) } != 0)
        .unwrap_or(false)
}

/// The state dir exists (or can be made) and is writable.
fn state_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| RunError::File {
        what: format!("state.dir: cannot create {}", dir.display()),
        source,
    })?;
    let probe = dir.join(".sluice-check");
    std::fs::write(&probe, b"").map_err(|source| RunError::File {
        what: format!("state.dir: {} is not writable", dir.display()),
        source,
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_or_an_unusable_state_dir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = |iface: &str, state: &Path| {
            format!(
                "[data_plane]\ninterfaces = [\"{iface}\"]\n[state]\ndir = \"{}\"\n",
                state.display()
            )
        };
        let cfg = CentralConfig::parse(&text("lo", dir.path())).unwrap();
        let lines = check(&cfg).unwrap();
        assert!(
            lines.iter().any(|l| l.contains("interfaces present: lo")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("no state yet")),
            "{lines:?}"
        );

        let cfg = CentralConfig::parse(&text("nosuch0", dir.path())).unwrap();
        let e = check(&cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("data_plane.interfaces[0]: no interface named \"nosuch0\""),
            "{e}"
        );

        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let cfg = CentralConfig::parse(&text("lo", &file.join("sub"))).unwrap();
        let e = format!("{:#}", check(&cfg).unwrap_err());
        assert!(e.starts_with("state.dir: cannot create"), "{e}");

        std::fs::write(dir.path().join("state.json"), "{ not json").unwrap();
        let cfg = CentralConfig::parse(&text("lo", dir.path())).unwrap();
        let e = check(&cfg).unwrap_err().to_string();
        assert!(e.contains("is corrupt"), "{e}");
    }
}
