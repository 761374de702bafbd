//! What the daemon keeps in its state directory (`/var/lib/fwd/`) so that a restart
//! continues where the last run left off: the rule ids of the policy in force, which the
//! pinned counters are indexed by. `fwd stats` reads it to name the counters.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    compile::{MapImage, RuleIds},
    policy::RuleRef,
};

const RULES_FILE: &str = "rules.json";

/// One rule of the policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRule {
    pub id: u32,
    /// `vendor` and `rule` in the file.
    #[serde(flatten)]
    pub name: RuleRef,
    pub service: String,
}

/// The policy in force, as the last install left it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub generation: u32,
    pub rules: Vec<RecordedRule>,
}

impl Recorded {
    pub fn of(image: &MapImage, generation: u32) -> Self {
        Recorded {
            generation,
            rules: image
                .rules
                .iter()
                .map(|r| RecordedRule {
                    id: r.id,
                    name: r.rule_ref(),
                    service: r.service.clone(),
                })
                .collect(),
        }
    }

    /// The ids to keep in the next compile.
    pub fn rule_ids(&self) -> RuleIds {
        RuleIds::from_recorded(self.rules.iter().map(|r| (r.name.to_string(), r.id)))
    }

    /// Each rule's id and identity.
    pub fn rule_names(&self) -> Vec<(u32, RuleRef)> {
        self.rules.iter().map(|r| (r.id, r.name.clone())).collect()
    }
}

pub fn rules_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RULES_FILE)
}

/// The record of the last run, if there is a readable one. A missing file is normal on a
/// first start; an unreadable one is reported and ignored (ids are then derived afresh).
pub fn load(state_dir: &Path) -> Option<Recorded> {
    let path = rules_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), %e, "cannot read the recorded rule ids");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(recorded) => Some(recorded),
        Err(e) => {
            warn!(path = %path.display(), %e, "ignoring a damaged record of rule ids");
            None
        }
    }
}

/// Writes the record atomically (a reader sees the old file or the new one).
pub fn save(state_dir: &Path, recorded: &Recorded) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    crate::atomic_file::write_bytes(
        &rules_path(state_dir),
        crate::atomic_file::Existing::Replace,
        &serde_json::to_vec_pretty(recorded)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = std::env::temp_dir().join(format!("fwd-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir), None);
        let recorded = Recorded {
            generation: 7,
            rules: vec![RecordedRule {
                id: 42,
                name: RuleRef::new("pexip", "media"),
                service: "Media".into(),
            }],
        };
        save(&dir, &recorded).unwrap();
        assert_eq!(load(&dir), Some(recorded.clone()));
        assert_eq!(recorded.rule_ids().get("pexip/media"), Some(42));
        std::fs::write(rules_path(&dir), "{not json").unwrap();
        assert_eq!(load(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
