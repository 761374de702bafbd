//! Attaching the programs to interfaces: links owned or pinned, adopting an earlier run's,
//! replacing another version's in place, detaching, and what is attached where.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink, SchedClassifierLinkId},
    xdp::{XdpLink, XdpLinkId},
};
use tracing::{debug, info, warn};

use super::{Datapath, DatapathError, EBPF_OBJECT, pins, program};

/// Where a program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    TcIngress,
    TcEgress,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
        }
    }
}

/// How an attachment came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Attached by this run.
    Attached,
    /// A pinned link of an earlier run, running the same program version; now this run's.
    Adopted,
    /// A pinned link of an earlier run that ran another program version; replaced
    /// atomically (the link never went away).
    Replaced,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Attached => "attached",
            Origin::Adopted => "adopted",
            Origin::Replaced => "replaced",
        }
    }
}

/// What holds an attachment in place.
pub(super) enum LinkHandle {
    /// Owned by the program: it goes when this process does.
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
    /// Pinned: it stays until the pin is removed.
    Pinned {
        #[expect(
            dead_code,
            reason = "held for its file descriptor: the link lives while it does"
        )]
        link: FdLink,
        path: PathBuf,
    },
}

/// One attached program.
pub(super) struct Attachment {
    pub(super) iface: String,
    /// The interface's index when the program was attached: a new interface of the same
    /// name has another.
    pub(super) ifindex: u32,
    pub(super) program: &'static str,
    pub(super) hook: Hook,
    pub(super) origin: Origin,
    pub(super) handle: LinkHandle,
}

/// One program in place on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub iface: String,
    pub program: &'static str,
    pub hook: Hook,
    pub origin: Origin,
    /// Pinned: it stays attached when the daemon stops or dies.
    pub pinned: bool,
}

/// Pins a link this run attached.
pub(super) fn pin_link(
    link: Result<FdLink, aya::programs::links::LinkError>,
    path: PathBuf,
) -> Result<LinkHandle, DatapathError> {
    let link = link.map_err(|e| pins::pin_error(&path, e))?;
    let link = link.pin(&path).map_err(|e| pins::pin_error(&path, e))?;
    Ok(LinkHandle::Pinned {
        link: link.into(),
        path,
    })
}

/// Whether TC programs get links (TCX, which can be pinned): probed (Linux 6.6+ or a
/// backport).
pub(super) fn has_tcx() -> bool {
    Datapath::features().is_ok_and(|f| f.tcx)
}

impl Datapath {
    pub(super) fn xdp(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(program::XDP_OUT)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    pub(super) fn classifier(&mut self, name: &'static str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// The pin for `hook` on `iface`, when this datapath pins and the kernel gives that
    /// hook a link (XDP: always on supported kernels; TC: TCX, 6.6+).
    pub(super) fn link_pin(&self, iface: &str, hook: Hook) -> Option<PathBuf> {
        let dir = self.pin_dir.as_deref()?;
        if hook != Hook::Xdp && !has_tcx() {
            return None;
        }
        pins::link_path(dir, iface, hook.name())
    }

    pub(super) fn attach_error(
        program: &'static str,
        iface: &str,
        source: ProgramError,
    ) -> DatapathError {
        DatapathError::Attach {
            program,
            iface: iface.to_string(),
            source,
        }
    }

    /// Adopts the link pinned at `pin`, if there is a usable one; true if it did.
    pub(super) fn try_adopt(
        &mut self,
        pin: Option<&Path>,
        name: &'static str,
        hook: Hook,
        iface: &str,
    ) -> Result<bool, DatapathError> {
        let Some(path) = pin.filter(|p| p.exists()) else {
            return Ok(false);
        };
        let Some((link, origin)) = self.adopt_link(path, name, hook, iface)? else {
            return Ok(false);
        };
        let path = path.to_path_buf();
        self.record(iface, name, hook, origin, LinkHandle::Pinned { link, path });
        Ok(true)
    }

    /// Takes over the pinned link at `path`: its program is replaced atomically by this
    /// run's (the hook never goes empty). `None` if the pin is not a usable link of the
    /// right kind; the caller then attaches anew.
    pub(super) fn adopt_link(
        &mut self,
        path: &Path,
        name: &'static str,
        hook: Hook,
        iface: &str,
    ) -> Result<Option<(FdLink, Origin)>, DatapathError> {
        let fd: FdLink = match PinnedLink::from_pin(path) {
            Ok(pinned) => pinned.into(),
            Err(err) => {
                warn!(path = %path.display(), %err, "unreadable link pin; attaching anew");
                pins::remove(path)?;
                return Ok(None);
            }
        };
        let info = fd.info().ok();
        if !info
            .as_ref()
            .is_some_and(|info| self.runs_here(hook, iface, info.program_id()))
        {
            // The link outlived the interface it was made for (deleted, or its namespace
            // gone) and this one only has its name and index; or it holds a program on an
            // interface of another network namespace. Either way it enforces nothing here.
            warn!(
                path = %path.display(),
                %iface,
                hook = hook.name(),
                "the pinned link is not on this interface (the interface it was made for is gone, or it is in another network namespace): unpinned, attaching afresh"
            );
            pins::remove(path)?;
            return Ok(None);
        }
        let old_tag = info.and_then(|info| pins::program_tag(info.program_id()));
        let new_tag = self
            .program_mut(name)?
            .info()
            .map_err(|source| DatapathError::Program { name, source })?
            .tag();
        let origin = if old_tag == Some(new_tag) {
            Origin::Adopted
        } else {
            Origin::Replaced
        };
        let err = |source| Self::attach_error(name, iface, source);
        let fd = if hook == Hook::Xdp {
            let Ok(link) = XdpLink::try_from(fd) else {
                pins::remove(path)?;
                return Ok(None);
            };
            let xdp = self.xdp();
            let id = xdp.attach_to_link(link).map_err(err)?;
            FdLink::try_from(xdp.take_link(id).map_err(err)?)
        } else {
            let Ok(link) = SchedClassifierLink::try_from(fd) else {
                pins::remove(path)?;
                return Ok(None);
            };
            let tc = self.classifier(name);
            let id = tc.attach_to_link(link).map_err(err)?;
            FdLink::try_from(tc.take_link(id).map_err(err)?)
        };
        let fd = fd.map_err(|e| pins::pin_error(path, e))?;
        Ok(Some((fd, origin)))
    }

    /// Whether program `id` runs on `hook` of `iface` in this network namespace.
    fn runs_here(&self, hook: Hook, iface: &str, id: u32) -> bool {
        self.programs_on(hook, iface).iter().any(|p| p.0 == id)
    }

    /// The programs on `hook` of `iface` in this network namespace, in the order they run:
    /// (id, name). Empty when the interface is missing or the kernel cannot say.
    fn programs_on(&self, hook: Hook, iface: &str) -> Vec<(u32, String)> {
        let ids: Vec<u32> = match hook {
            Hook::Xdp => nix::net::if_::if_nametoindex(iface)
                .ok()
                .and_then(|index| crate::net::links::xdp_programs(index).ok())
                .unwrap_or_default(),
            Hook::TcIngress | Hook::TcEgress if has_tcx() => {
                let side = if hook == Hook::TcIngress {
                    TcAttachType::Ingress
                } else {
                    TcAttachType::Egress
                };
                match SchedClassifier::query_tcx(iface, side) {
                    Ok((_, programs)) => {
                        return programs
                            .iter()
                            .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
                            .collect();
                    }
                    Err(err) => {
                        debug!(%iface, %err, "querying the TCX programs");
                        Vec::new()
                    }
                }
            }
            Hook::TcIngress | Hook::TcEgress => Vec::new(),
        };
        ids.into_iter()
            .map(|id| (id, pins::program_name(id).unwrap_or_else(|| "?".into())))
            .collect()
    }

    /// Programs of other tools that run before fwd's on `hook` of `iface`: they can pass
    /// packets fwd never sees. Logged with what to do.
    fn warn_of_others(&mut self, hook: Hook, iface: &str, ours: &'static str) {
        let Ok(own) = self.program_mut(ours).and_then(|p| {
            p.info()
                .map_err(|source| DatapathError::Program { name: ours, source })
        }) else {
            return;
        };
        let own = own.id();
        for (id, name) in self
            .programs_on(hook, iface)
            .into_iter()
            .take_while(|(id, _)| *id != own)
        {
            warn!(
                %iface,
                hook = hook.name(),
                program = %name,
                id,
                "another tool's program runs before fwd's on this hook and can pass packets fwd never judges; remove it or order it after fwd (`bpftool net show dev {iface}` lists them)"
            );
        }
    }

    pub(super) fn record(
        &mut self,
        iface: &str,
        program: &'static str,
        hook: Hook,
        origin: Origin,
        handle: LinkHandle,
    ) {
        info!(%iface, program, hook = hook.name(), origin = origin.name(), "program in place");
        self.attachments.push(Attachment {
            iface: iface.to_string(),
            ifindex: nix::net::if_::if_nametoindex(iface).unwrap_or(0),
            program,
            hook,
            origin,
            handle,
        });
    }

    /// Attaches a TC program to one side of `iface`: TCX where the kernel has it (6.6+),
    /// a clsact qdisc otherwise. With pins, a link an earlier run pinned there is adopted.
    pub(super) fn attach_tc(
        &mut self,
        name: &'static str,
        iface: &str,
        side: TcAttachType,
    ) -> Result<(), DatapathError> {
        let hook = if matches!(side, TcAttachType::Ingress) {
            Hook::TcIngress
        } else {
            Hook::TcEgress
        };
        let pin = self.link_pin(iface, hook);
        if self.try_adopt(pin.as_deref(), name, hook, iface)? {
            return Ok(());
        }
        if !has_tcx() {
            // The qdisc may be there already (another tool, an earlier run): that is fine.
            if let Err(err) = tc::qdisc_add_clsact(iface) {
                debug!(%iface, %err, "adding the clsact qdisc");
            }
        }
        let err = |source| Self::attach_error(name, iface, source);
        let tc = self.classifier(name);
        let id = tc.attach(iface, side).map_err(err)?;
        let handle = match pin {
            Some(path) => pin_link(FdLink::try_from(tc.take_link(id).map_err(err)?), path)?,
            None => LinkHandle::Tc(id),
        };
        self.record(iface, name, hook, Origin::Attached, handle);
        self.warn_of_others(hook, iface, name);
        Ok(())
    }

    /// Gateway mode on the LAN interface `iface`: XDP on its ingress judges what the LAN
    /// sends out (native XDP where the driver has it, generic otherwise), and TC on its
    /// egress judges what comes back in, after NAT has restored the LAN host's address.
    pub fn attach_gateway(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_xdp(iface)?;
        self.attach_tc(program::TC_IN, iface, TcAttachType::Egress)
    }

    /// Host mode on the uplink `iface`: TC on its egress judges what the host sends, TC on
    /// its ingress what it receives.
    pub fn attach_host(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_tc(program::TC_OUT, iface, TcAttachType::Egress)?;
        self.attach_tc(program::TC_IN, iface, TcAttachType::Ingress)
    }

    pub(super) fn attach_xdp(&mut self, iface: &str) -> Result<(), DatapathError> {
        let name = program::XDP_OUT;
        let pin = self.link_pin(iface, Hook::Xdp);
        if self.try_adopt(pin.as_deref(), name, Hook::Xdp, iface)? {
            return Ok(());
        }
        // Another tool's XDP program holds the hook: fwd does not take it over.
        let others = self.programs_on(Hook::Xdp, iface);
        if !others.is_empty() {
            return Err(DatapathError::Occupied {
                iface: iface.to_string(),
                hook: Hook::Xdp.name(),
                programs: others
                    .iter()
                    .map(|(id, name)| format!("`{name}` (id {id})"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let err = |source| Self::attach_error(name, iface, source);
        let program = self.xdp();
        let id = match program.attach(iface, XdpMode::Driver) {
            Ok(id) => id,
            Err(native) => {
                // veth, dummy and many virtual NICs lack native XDP; generic mode works
                // everywhere, at a lower packet rate.
                debug!(%iface, %native, "native XDP unavailable, using generic mode");
                program.attach(iface, XdpMode::Skb).map_err(err)?
            }
        };
        let handle = match pin {
            Some(path) => pin_link(FdLink::try_from(program.take_link(id).map_err(err)?), path)?,
            None => LinkHandle::Xdp(id),
        };
        self.record(iface, name, Hook::Xdp, Origin::Attached, handle);
        Ok(())
    }

    /// Removes link pins this run did not claim: interfaces no longer configured, or
    /// deleted and created again. Removing the pin detaches the link. Returns their names.
    pub fn prune_stale_links(&mut self) -> Result<Vec<String>, DatapathError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(Vec::new());
        };
        let claimed: BTreeSet<&Path> = self
            .attachments
            .iter()
            .filter_map(|a| match &a.handle {
                LinkHandle::Pinned { path, .. } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        let mut pruned = Vec::new();
        for path in pins::links(&dir) {
            if !claimed.contains(path.as_path()) {
                pins::remove(&path)?;
                let name = path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                info!(link = %name, "stale link pin removed (its program is detached)");
                pruned.push(name);
            }
        }
        // Maps of an earlier layout (a previous fwd version) that no program of this one
        // uses: their programs left the hooks above, so unpinning them frees them.
        for path in pins::orphan_maps(&dir, EBPF_OBJECT)? {
            pins::remove(&path)?;
            info!(map = %path.display(), "map pin of an earlier fwd version removed");
        }
        Ok(pruned)
    }

    /// Whether a link an earlier run pinned for `hook` on `iface` (as it is now) is there
    /// to adopt.
    pub fn has_pinned_link(&self, iface: &str, hook: Hook) -> bool {
        self.link_pin(iface, hook).is_some_and(|p| p.exists())
    }

    /// The index `iface` had when its programs were attached; `None` if none are.
    pub fn attached_index(&self, iface: &str) -> Option<u32> {
        self.attachments
            .iter()
            .find(|a| a.iface == iface)
            .map(|a| a.ifindex)
    }

    /// Lets go of the programs on `iface` (gone, or deleted and created again): their
    /// links are released and their pins removed. The names of the hooks let go of.
    pub fn forget_interface(&mut self, iface: &str) -> Vec<&'static str> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.attachments)
            .into_iter()
            .partition(|a| a.iface == iface);
        self.attachments = kept;
        let mut hooks = Vec::new();
        for attachment in gone {
            hooks.push(attachment.hook.name());
            let result = match attachment.handle {
                LinkHandle::Xdp(id) => self.xdp().detach(id).map_err(|e| e.to_string()),
                LinkHandle::Tc(id) => self
                    .classifier(attachment.program)
                    .detach(id)
                    .map_err(|e| e.to_string()),
                LinkHandle::Pinned { path, .. } => pins::remove(&path).map_err(|e| e.to_string()),
            };
            // The interface is usually gone, and the link with it: nothing to undo.
            if let Err(err) = result {
                debug!(%iface, program = attachment.program, %err, "letting go of a link");
            }
        }
        hooks
    }

    /// Detaches every program this datapath attached or adopted, the last first, and
    /// removes their link pins. Maps and program pins stay (see `unpin_all`).
    pub fn detach_all(&mut self) {
        while let Some(attachment) = self.attachments.pop() {
            let Attachment {
                iface,
                program,
                handle,
                ..
            } = attachment;
            let result = match handle {
                LinkHandle::Xdp(id) => self.xdp().detach(id).map_err(|e| e.to_string()),
                LinkHandle::Tc(id) => self
                    .classifier(program)
                    .detach(id)
                    .map_err(|e| e.to_string()),
                // The pin is what keeps the link; the file descriptor closes on drop.
                LinkHandle::Pinned { path, .. } => pins::remove(&path).map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => info!(%iface, program, "program detached"),
                Err(err) => warn!(%iface, program, %err, "detaching program"),
            }
        }
    }

    /// Detaches everything and removes every pin under the pin directory, so the next
    /// start begins afresh (`on_exit = "detach"`).
    pub fn unpin_all(&mut self) -> Result<(), DatapathError> {
        self.detach_all();
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        for link in pins::links(&dir) {
            pins::remove(&link)?;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(pins::pin_error(&dir, format!("removing the pins: {e}"))),
        }
    }

    /// What is attached where, and how it came about.
    pub fn attached(&self) -> Vec<Attached> {
        self.attachments
            .iter()
            .map(|a| Attached {
                iface: a.iface.clone(),
                program: a.program,
                hook: a.hook,
                origin: a.origin,
                pinned: matches!(a.handle, LinkHandle::Pinned { .. }),
            })
            .collect()
    }
}
