//! Which rules of a policy directory a site enforces, on which day.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::{Date, Level, Rule};

/// Which rules of a policy directory a site enforces. Rules without a profile or region
/// apply whatever is selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The day validity windows are judged against.
    pub today: Date,
    /// `None`: every vendor.
    pub vendors: Option<Vec<String>>,
    /// `None`: every level.
    pub levels: Option<Vec<Level>>,
    /// vendor -> the one profile enforced for it; vendors not listed keep every profile.
    pub profiles: BTreeMap<String, String>,
    /// `None`: every region.
    pub regions: Option<Vec<String>>,
    /// Vendors whose rules are rolled out in audit mode: a packet to one of their
    /// addresses that no rule allows passes and counts as `audit_would_drop`.
    pub audit_vendors: BTreeSet<String>,
}

impl Selection {
    /// Every vendor, level, profile and region, judged today.
    pub fn widest(today: Date) -> Selection {
        Selection {
            today,
            vendors: None,
            levels: None,
            profiles: BTreeMap::new(),
            regions: None,
            audit_vendors: BTreeSet::new(),
        }
    }

    pub(super) fn includes(&self, vendor: &str, rule: &Rule) -> bool {
        self.vendors
            .as_ref()
            .is_none_or(|v| v.iter().any(|v| v == vendor))
            && self.levels.as_ref().is_none_or(|l| l.contains(&rule.level))
            && match (self.profiles.get(vendor), &rule.profile) {
                (Some(wanted), Some(profile)) => wanted == profile,
                _ => true,
            }
            && match (&self.regions, &rule.region) {
                (Some(regions), Some(region)) => regions.contains(region),
                _ => true,
            }
    }
}
