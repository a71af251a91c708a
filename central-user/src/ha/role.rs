//! The role rules of a hot-standby pair, as one pure function: what this node knows in, what
//! to do out. `node.rs` runs it every half heartbeat; the tests below pin every rule.
//!
//! The rules (ARCHITECTURE.md, "Hot standby"):
//! 1. A node that hears a higher epoch from its partner while active steps down at once.
//! 2. Two actives with the same epoch (both took over while the link was cut): the lower
//!    (priority, name) steps down.
//! 3. Two standbys (both just started): the higher (priority, name) takes over, after the
//!    same probe as a takeover.
//! 4. A standby that has not heard its partner for the takeover timeout takes over only if
//!    nobody on the exporters' segment answers for the virtual IP (the probe, not decided
//!    here): evidence beyond the HA link that the active is gone.
//! 5. With `preempt`, a synchronised standby of higher priority asks the active to hand over.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Holds the virtual IPs, makes the controller's decisions, serves peers.
    Active,
    /// Mirrors the active; forwarding-ready, decides nothing.
    Standby,
}

impl Role {
    /// `active` / `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// What the partner last said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partner {
    /// Its role.
    pub role: Role,
    /// Its epoch.
    pub epoch: u64,
    /// Its priority.
    pub priority: u8,
    /// Its name.
    pub name: String,
    /// How long ago it was last heard from.
    pub heard_ago: Duration,
}

/// Everything the rules look at.
#[derive(Clone, Debug)]
pub struct View {
    /// This node's role.
    pub role: Role,
    /// This node's epoch.
    pub epoch: u64,
    /// This node's priority.
    pub priority: u8,
    /// This node's name.
    pub name: String,
    /// The partner, if it was ever heard from.
    pub partner: Option<Partner>,
    /// How long this node has run (a partner never heard from counts as silent since then).
    pub uptime: Duration,
    /// `ha.takeover_timeout_ms`.
    pub takeover_timeout: Duration,
    /// `ha.preempt`.
    pub preempt: bool,
    /// A standby that has applied a full snapshot.
    pub synced: bool,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes.
    Stay,
    /// Give up the virtual IPs and become the standby.
    StepDown(String),
    /// Probe the virtual IPs; take over if nobody else answers for them.
    ProbeThenTakeOver(String),
    /// Ask the active partner to hand over (preemption).
    RequestHandover,
}

/// The rules above.
pub fn decide(v: &View) -> Decision {
    let rank = |priority: u8, name: &str| (priority, name.to_owned());
    let alive = v
        .partner
        .as_ref()
        .filter(|p| p.heard_ago < v.takeover_timeout);
    match (v.role, alive) {
        (Role::Active, Some(p)) if p.epoch > v.epoch => StepDown(format!(
            "partner {} is active with a higher epoch ({} > {})",
            p.name, p.epoch, v.epoch
        )),
        (Role::Active, Some(p))
            if p.role == Role::Active
                && p.epoch == v.epoch
                && rank(p.priority, &p.name) > rank(v.priority, &v.name) =>
        {
            StepDown(format!(
                "partner {} is also active in epoch {}, with higher priority",
                p.name, v.epoch
            ))
        }
        (Role::Active, _) => Decision::Stay,
        (Role::Standby, Some(p)) if p.role == Role::Standby => {
            if rank(v.priority, &v.name) > rank(p.priority, &p.name) {
                ProbeThenTakeOver(format!(
                    "both nodes standby: {} has the higher priority",
                    v.name
                ))
            } else {
                Decision::Stay
            }
        }
        (Role::Standby, Some(p)) => {
            if v.preempt && v.synced && v.priority > p.priority {
                Decision::RequestHandover
            } else {
                Decision::Stay
            }
        }
        (Role::Standby, None) => {
            let silent = v.partner.as_ref().map_or(v.uptime, |p| p.heard_ago);
            if silent >= v.takeover_timeout {
                ProbeThenTakeOver(match &v.partner {
                    Some(p) => format!(
                        "partner {} silent for {} ms",
                        p.name,
                        p.heard_ago.as_millis()
                    ),
                    None => format!("no partner heard since start ({} ms)", v.uptime.as_millis()),
                })
            } else {
                Decision::Stay
            }
        }
    }
}

use Decision::{ProbeThenTakeOver, StepDown};

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(300);

    fn view(role: Role, epoch: u64, partner: Option<Partner>) -> View {
        View {
            role,
            epoch,
            priority: 100,
            name: "a".into(),
            partner,
            uptime: Duration::from_secs(60),
            takeover_timeout: T,
            preempt: false,
            synced: true,
        }
    }

    fn partner(role: Role, epoch: u64, priority: u8, heard_ms: u64) -> Option<Partner> {
        Some(Partner {
            role,
            epoch,
            priority,
            name: "b".into(),
            heard_ago: Duration::from_millis(heard_ms),
        })
    }

    #[test]
    fn a_silent_active_is_probed_then_replaced() {
        let d = decide(&view(Role::Standby, 3, partner(Role::Active, 3, 100, 299)));
        assert_eq!(d, Decision::Stay, "within the timeout");
        let d = decide(&view(Role::Standby, 3, partner(Role::Active, 3, 100, 300)));
        assert!(matches!(d, ProbeThenTakeOver(r) if r.contains("silent for 300 ms")));
    }

    #[test]
    fn a_standby_that_never_heard_its_partner_waits_the_timeout_from_start() {
        let mut v = view(Role::Standby, 0, None);
        v.uptime = Duration::from_millis(100);
        assert_eq!(decide(&v), Decision::Stay);
        v.uptime = T;
        assert!(matches!(decide(&v), ProbeThenTakeOver(_)));
    }

    #[test]
    fn a_higher_epoch_makes_the_active_step_down_whatever_the_priorities() {
        let mut v = view(Role::Active, 4, partner(Role::Active, 5, 1, 10));
        v.priority = 254;
        assert!(matches!(decide(&v), StepDown(r) if r.contains("higher epoch")));
        // A partner standby with a stale lower epoch changes nothing.
        let v = view(Role::Active, 4, partner(Role::Standby, 3, 254, 10));
        assert_eq!(decide(&v), Decision::Stay);
    }

    #[test]
    fn two_actives_of_one_epoch_keep_the_higher_priority() {
        let low = view(Role::Active, 2, partner(Role::Active, 2, 200, 10));
        assert!(matches!(decide(&low), StepDown(_)));
        let high = view(Role::Active, 2, partner(Role::Active, 2, 50, 10));
        assert_eq!(decide(&high), Decision::Stay);
        // Equal priorities: the name decides, so exactly one of them steps down.
        let a = view(Role::Active, 2, partner(Role::Active, 2, 100, 10));
        assert!(matches!(decide(&a), StepDown(_)), "b > a");
    }

    #[test]
    fn two_standbys_elect_the_higher_priority() {
        let v = view(Role::Standby, 0, partner(Role::Standby, 0, 50, 10));
        assert!(matches!(decide(&v), ProbeThenTakeOver(r) if r.contains("higher priority")));
        let v = view(Role::Standby, 0, partner(Role::Standby, 0, 150, 10));
        assert_eq!(decide(&v), Decision::Stay);
    }

    #[test]
    fn preemption_is_off_by_default_and_needs_a_synced_higher_priority() {
        let mut v = view(Role::Standby, 1, partner(Role::Active, 1, 50, 10));
        assert_eq!(decide(&v), Decision::Stay, "preempt off");
        v.preempt = true;
        assert_eq!(decide(&v), Decision::RequestHandover);
        v.synced = false;
        assert_eq!(decide(&v), Decision::Stay, "not before a full snapshot");
        v.synced = true;
        v.priority = 40;
        assert_eq!(decide(&v), Decision::Stay);
    }
}
