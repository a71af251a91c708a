//! `sluice-central token generate|rotate`: run on the Central host, against its state dir.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::auth::{AuthError, TokenKind, token_generate};

/// `sluice-central token …`
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new random 256-bit token once and store only its SHA-256 hash. The previous token
    /// of the same kind stops working at once (use `rotate` for a grace period).
    Generate {
        /// Admin token (for sluicectl) instead of the peers' access token.
        #[arg(long)]
        admin: bool,
    },
    /// Like `generate`, but the previous token stays valid for the grace period.
    Rotate {
        /// Admin token (for sluicectl) instead of the peers' access token.
        #[arg(long)]
        admin: bool,
        /// How long the previous token stays valid: 90s, 30m, 1h, 2d (or seconds).
        #[arg(long, default_value = "1h", value_parser = sluice_common::duration::parse)]
        grace: Duration,
    },
}

/// Runs a token command on `state_dir`; returns what to print on stdout (the token on its own
/// first line, so `| head -1 > token` works).
pub fn run(state_dir: &Path, command: &TokenCommand) -> Result<String, AuthError> {
    let (admin, grace) = match command {
        TokenCommand::Generate { admin } => (*admin, None),
        TokenCommand::Rotate { admin, grace } => (*admin, Some(*grace)),
    };
    let kind = if admin {
        TokenKind::Admin
    } else {
        TokenKind::Peer
    };
    let issued = token_generate(state_dir, kind, grace, SystemTime::now())?;
    let previous = match (grace, issued.previous_expires_unix_ms) {
        (Some(g), Some(_)) => format!(
            "the previous {kind} token stays valid for {}\n",
            super::render::duration(g.as_secs())
        ),
        _ => String::new(),
    };
    Ok(format!(
        "{}\n\n{kind} token generated; it is shown only this once.\naccess token hash: {}\n{previous}",
        issued.token, issued.hash
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &TokenCommand::Generate { admin: true }).unwrap();
        let token = out.lines().next().unwrap();
        assert_eq!(token.len(), 64);
        let out = run(
            dir.path(),
            &TokenCommand::Rotate {
                admin: true,
                grace: Duration::from_secs(3600),
            },
        )
        .unwrap();
        assert!(out.contains("stays valid for 1h00m"), "{out}");
    }
}
