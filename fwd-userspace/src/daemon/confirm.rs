//! `fwd reload --confirm SECS`: a reload that goes back to the policy before it unless `fwd
//! confirm` arrives in time. What to go back to is kept here (the image, config, rule ids
//! and rules of the last confirmed policy); going back is an install like any other, so
//! the names the DNS proxy learned are judged again under it and survive both ways.

use std::time::Duration;

use tracing::{info, warn};

use super::{Daemon, Shared, blocking, control, reload_reply, unix_now};
use crate::{
    compile::{Compiled, MapImage, RuleIds},
    config::Config,
    diff::RuleView,
};

/// The last confirmed policy, while a reload waits for `fwd confirm`.
pub(super) struct Pending {
    /// Which `--confirm` reload this is (a later one replaces the deadline, not the target).
    token: u64,
    pub(super) deadline_unix: i64,
    config: Config,
    image: MapImage,
    ids: RuleIds,
    views: Vec<RuleView>,
    generation: u32,
}

impl Daemon {
    /// Reloads, and arms the roll-back: the policy in force now is what `roll_back` returns
    /// to (or, if a confirmation is already pending, the one that one would return to).
    pub(super) fn reload_to_confirm(&mut self, seconds: u64) -> (control::ReloadReply, u64) {
        let token = self.confirm.as_ref().map_or(1, |p| p.token + 1);
        let target = match self.confirm.take() {
            Some(p) => Some(p),
            None => self.datapath.active_image().map(|image| Pending {
                token,
                deadline_unix: 0,
                config: self.config.clone(),
                image: image.clone(),
                ids: self.rule_ids.clone(),
                views: self.rules_in_force.clone(),
                generation: self.generation,
            }),
        };
        let result = self.reload();
        let mut reply = reload_reply(self, result);
        if reply.ok
            && let Some(mut p) = target
        {
            p.token = token;
            p.deadline_unix = unix_now() + seconds as i64;
            reply.confirm_by_unix = Some(p.deadline_unix);
            info!(
                generation = self.generation,
                seconds,
                "reloaded; `fwd confirm` within the time keeps it, else generation {}'s policy comes back",
                p.generation
            );
            self.confirm = Some(p);
        } else if let Some(p) = target.filter(|p| p.deadline_unix != 0) {
            // A rejected reload leaves an earlier pending confirmation as it was.
            self.confirm = Some(p);
        }
        (reply, token)
    }

    /// `fwd confirm`: keeps the policy in force.
    pub(super) fn confirm(&mut self) -> control::ConfirmReply {
        match self.confirm.take() {
            Some(p) => {
                info!(
                    generation = self.generation,
                    "reload confirmed; generation {} will not come back", p.generation
                );
                control::ConfirmReply {
                    ok: true,
                    generation: self.generation,
                    message: format!("generation {} confirmed", self.generation),
                }
            }
            None => control::ConfirmReply {
                ok: false,
                generation: self.generation,
                message: "no reload is waiting for confirmation".into(),
            },
        }
    }

    /// Goes back to the last confirmed policy if reload `token` is still unconfirmed.
    fn roll_back(&mut self, token: u64) {
        if self.confirm.as_ref().is_none_or(|p| p.token != token) {
            return;
        }
        let Some(p) = self.confirm.take() else {
            return;
        };
        let compiled = Compiled {
            image: p.image,
            warnings: Vec::new(),
            pending: Vec::new(),
            expired: Vec::new(),
            unselected: 0,
            ids: p.ids,
        };
        let was = p.generation;
        match self.put_in_force(p.config, &compiled, p.views, None) {
            Ok((generation, _)) => {
                self.rollbacks += 1;
                warn!(
                    generation,
                    "the reload was not confirmed in time: generation {was}'s policy is back in force"
                );
            }
            Err(err) => {
                warn!("rolling back an unconfirmed reload failed; the new policy stays: {err}");
            }
        }
    }
}

/// Waits out reload `token`'s time, then rolls it back unless it was confirmed.
pub(super) async fn watch(shared: Shared, token: u64, seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    blocking(&shared, move |s| {
        s.lock().expect("daemon state lock").roll_back(token);
    })
    .await;
}
