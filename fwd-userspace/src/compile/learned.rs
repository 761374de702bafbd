//! Runtime additions to a compiled image: the hosts the DNS proxy learned and the classes
//! made for them. Plain values: the DNS table computes them, the datapath installs them.

use std::{collections::BTreeMap, net::IpAddr};

use super::PortEntry;

/// Entries learned at run time (the DNS proxy's), beside a slot's compiled image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Host address (a /32 or /128 entry) -> class value, `CLASS_AUDIT` included.
    pub hosts: BTreeMap<IpAddr, u32>,
    /// Classes made at run time -> their port entries. Their numbers must not be classes
    /// of the image (the compiler numbers from 0 up; take them from high up).
    pub classes: BTreeMap<u32, Vec<PortEntry>>,
}

/// One change to the datapath's learned entries, in the order they must be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A runtime class's port entries (before any address uses the class).
    AddClass(u32, Vec<PortEntry>),
    /// A host entry with its class value (`CLASS_AUDIT` included).
    SetHost(IpAddr, u32),
    RemoveHost(IpAddr),
    /// A runtime class no address uses any more.
    RemoveClass(u32),
}
