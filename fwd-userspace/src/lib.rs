//! fwd: compiles vendor allowlists into eBPF maps and enforces them at line rate.
//!
//! Modules are rooms: `policy` knows nothing of maps, `compile` nothing of aya, and
//! `datapath` is the only module that talks to the kernel.

pub mod atomic_file;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod diff;
pub mod export;
pub mod feeds;
pub mod import;
pub mod lock;
pub mod net;
pub mod policy;
