//! Interfaces that come and go. fwd's programs go on every configured interface that
//! exists, at start and whenever rtnetlink says links changed (a periodic look backs the
//! events up); an interface deleted and created again gets them again. A gateway's own
//! addresses, which always pass, are followed too: a change reloads. With
//! `[gateway] hold_forwarding`, IP forwarding is on only while every gateway interface has
//! its programs.

use std::{collections::BTreeMap, time::Duration};

use tracing::{error, info, warn};

use crate::{
    config::{Config, InterfaceMode},
    datapath::{Datapath, DatapathError},
    net::links::LinkEvents,
};

use super::{Shared, blocking};

/// How often the interfaces are looked at even without a link event.
const BACKSTOP: Duration = Duration::from_secs(5);

/// What happened to the configured interfaces.
#[derive(Clone, Debug, Default)]
pub(super) struct Interfaces {
    /// Configured interfaces that do not exist now, or whose programs failed to attach.
    pub(super) missing: Vec<String>,
    /// (interface, change) -> times: `appeared`, `recreated`, `gone`, `failed`.
    pub(super) changes: BTreeMap<(String, &'static str), u64>,
    /// Forwarding is held off (`hold_forwarding`).
    pub(super) forwarding_held: bool,
    /// A gateway's own addresses when the exemptions in force were made.
    pub(super) own_addresses: Vec<ipnet::IpNet>,
}

impl Interfaces {
    fn count(&mut self, iface: &str, change: &'static str) {
        *self.changes.entry((iface.to_string(), change)).or_default() += 1;
    }
}

fn attach(datapath: &mut Datapath, name: &str, mode: InterfaceMode) -> Result<(), DatapathError> {
    match mode {
        InterfaceMode::Gateway => datapath.attach_gateway(name),
        InterfaceMode::Host => datapath.attach_host(name),
    }
}

/// Puts the programs on each configured interface that exists and lacks them, and lets go
/// of those of interfaces gone or created again. At start (`strict`), an interface that
/// exists but cannot take the programs is an error; later it is logged, counted and
/// tried again at the next change.
pub(super) fn reconcile(
    datapath: &mut Datapath,
    config: &Config,
    state: &mut Interfaces,
    strict: bool,
) -> Result<(), DatapathError> {
    let mut missing = Vec::new();
    for iface in &config.interfaces {
        let name = iface.name.as_str();
        let now = nix::net::if_::if_nametoindex(name).ok();
        let had = datapath.attached_index(name);
        if had.is_some() && had == now {
            continue;
        }
        if had.is_some() {
            let hooks = datapath.forget_interface(name);
            let change = if now.is_some() { "recreated" } else { "gone" };
            info!(
                interface = name,
                ?hooks,
                change,
                "interface changed; its programs are let go"
            );
            state.count(name, change);
        }
        let Some(index) = now else {
            if !state.missing.iter().any(|m| m == name) {
                warn!(
                    interface = name,
                    "configured interface does not exist (yet): nothing is enforced on it until it appears, and then at once"
                );
            }
            missing.push(iface.name.clone());
            continue;
        };
        match attach(datapath, name, iface.mode) {
            Ok(()) => {
                if had.is_none() && !strict {
                    info!(
                        interface = name,
                        index, "interface appeared; programs attached"
                    );
                    state.count(name, "appeared");
                }
            }
            Err(err) if strict => return Err(err),
            Err(err) => {
                // Half an attachment is let go too: the next change tries it whole.
                datapath.forget_interface(name);
                error!(
                    interface = name,
                    "attaching to an interface that appeared: {err}"
                );
                state.count(name, "failed");
                missing.push(iface.name.clone());
            }
        }
    }
    state.missing = missing;
    if config.hold_forwarding {
        let gateway_missing = config
            .interfaces
            .iter()
            .any(|i| i.mode == InterfaceMode::Gateway && state.missing.contains(&i.name));
        set_forwarding(state, !gateway_missing);
    }
    Ok(())
}

/// Turns IP forwarding (IPv4 and IPv6) on or off, if it is not so already.
pub(super) fn set_forwarding(state: &mut Interfaces, on: bool) {
    if let Err(err) = crate::net::set_ip_forwarding(on) {
        error!(%err, "setting IP forwarding");
    }
    match (state.forwarding_held, on) {
        (true, true) => info!("every gateway interface has fwd's programs: IP forwarding on"),
        (false, false) => {
            warn!("a gateway interface lacks fwd's programs: IP forwarding held off");
        }
        _ => {}
    }
    state.forwarding_held = !on;
}

/// Follows link events (and looks every few seconds anyway), attaching as interfaces
/// appear. Runs until the daemon stops.
pub(super) async fn follow(shared: Shared) {
    let mut events = match LinkEvents::open() {
        Ok(events) => Some(events),
        Err(err) => {
            warn!(%err, "cannot follow link events; interfaces are looked at every {}s", BACKSTOP.as_secs());
            None
        }
    };
    loop {
        match &mut events {
            Some(e) => {
                tokio::select! {
                    changed = e.changed() => if let Err(err) = changed {
                        warn!(%err, "reading link events");
                        tokio::time::sleep(BACKSTOP).await;
                    },
                    () = tokio::time::sleep(BACKSTOP) => {}
                }
            }
            None => tokio::time::sleep(BACKSTOP).await,
        }
        let addresses_changed = blocking(&shared, |s| {
            let mut daemon = s.lock().expect("daemon state lock");
            let super::Daemon {
                datapath,
                config,
                interfaces,
                ..
            } = &mut *daemon;
            // Not strict: nothing here is fatal; failures are counted and retried.
            let _ = reconcile(datapath, config, interfaces, false);
            if config.gateway_interfaces().is_empty() {
                return false;
            }
            let own = crate::net::own_addresses();
            let changed = own != interfaces.own_addresses;
            interfaces.own_addresses = own;
            changed
        })
        .await;
        if addresses_changed == Some(true) {
            // A gateway's own addresses pass (`exemptions`): new ones (an interface that
            // appeared, DHCP) go in with a reload; if it fails, the policy in force stays.
            info!("the gateway's own addresses changed: reloading so they are exempt");
            blocking(&shared, super::reload_and_report).await;
        }
    }
}
