//! What the compiler warns about: rules that open nothing another rule of their vendor
//! does not, shadowed rules.

use std::fmt;

use crate::policy::{Direction, Location, PortRange, PortSide, Protocol, Remote, Rule};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A rule opens ports to every address.
    AnyRemote { rule: String, location: Location },
    /// A rule names hostnames or domains, which only the DNS proxy can open.
    NeedsDns {
        rule: String,
        names: Vec<String>,
        location: Location,
    },
    /// A vendor has addresses of one family only.
    SingleFamily {
        vendor: String,
        family: &'static str,
    },
    /// Every packet a rule covers is owned by other rules: it can never count.
    Shadowed { rule: String, location: Location },
    /// Two rules of a vendor say the same thing.
    Duplicate {
        rule: String,
        first: String,
        location: Location,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::AnyRemote { rule, location } => write!(
                f,
                "{location}: rule `{rule}` allows its ports to every address (remote = \"any\")"
            ),
            Warning::NeedsDns {
                rule,
                names,
                location,
            } => write!(
                f,
                "{location}: rule `{rule}` names {}; these open only what fwd's DNS proxy resolves ([dns], docs/dns.md)",
                names.join(", ")
            ),
            Warning::SingleFamily { vendor, family } => {
                write!(f, "vendor `{vendor}` lists {family} addresses only")
            }
            Warning::Shadowed { rule, location } => write!(
                f,
                "{location}: rule `{rule}` is shadowed: narrower or earlier rules own every port it covers, so it never counts"
            ),
            Warning::Duplicate {
                rule,
                first,
                location,
            } => write!(f, "{location}: rule `{rule}` repeats rule `{first}`"),
        }
    }
}

/// What a rule opens: two rules with equal effects open exactly the same packets.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct Effect<'a> {
    pub(super) direction: Direction,
    pub(super) port_side: PortSide,
    pub(super) related: bool,
    pub(super) protocols: &'a [Protocol],
    pub(super) ports: &'a [PortRange],
    pub(super) remotes: &'a [Remote],
}

impl<'a> Effect<'a> {
    pub(super) fn of(rule: &'a Rule) -> Self {
        Effect {
            direction: rule.direction,
            port_side: rule.port_side,
            related: rule.related,
            protocols: &rule.protocols,
            ports: &rule.ports,
            remotes: &rule.remotes,
        }
    }
}
