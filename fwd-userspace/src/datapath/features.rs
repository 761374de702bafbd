//! What fwd uses of the kernel, probed rather than read off its version number: a
//! distribution kernel (RHEL 9's 5.14, say) carries backports its number does not show,
//! and a new kernel may be built without something fwd needs.
//!
//! The map types and helpers probed are the ones the eBPF object really uses (read from
//! it), so the list cannot fall behind the programs.

use std::sync::OnceLock;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported},
};
use aya_obj::{
    btf::{Btf, BtfKind},
    generated::{bpf_func_id, bpf_map_type},
};

use super::DatapathError;

/// What the running kernel offers fwd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// The kernel describes its own types (`/sys/kernel/btf/vmlinux`); the other
    /// link probes read it.
    pub btf: bool,
    /// XDP programs held by a link (which can be pinned; Linux 5.9+ or a backport).
    pub xdp_links: bool,
    /// TC programs held by a link (TCX; Linux 6.6+): otherwise a clsact qdisc holds them,
    /// and they cannot be pinned.
    pub tcx: bool,
    /// What fwd needs and the kernel lacks.
    pub missing: Vec<String>,
}

/// The helpers fwd's programs may call, by the kernel's id. A helper the object calls
/// that is not listed here is a test failure (`every_helper_the_programs_call_is_probed`).
const HELPERS: &[bpf_func_id] = &[
    bpf_func_id::BPF_FUNC_map_lookup_elem,
    bpf_func_id::BPF_FUNC_map_update_elem,
    bpf_func_id::BPF_FUNC_map_delete_elem,
    bpf_func_id::BPF_FUNC_ktime_get_ns,
    bpf_func_id::BPF_FUNC_ktime_get_coarse_ns,
    bpf_func_id::BPF_FUNC_get_smp_processor_id,
    bpf_func_id::BPF_FUNC_skb_load_bytes,
    bpf_func_id::BPF_FUNC_skb_pull_data,
    bpf_func_id::BPF_FUNC_xdp_load_bytes,
    bpf_func_id::BPF_FUNC_ringbuf_output,
    bpf_func_id::BPF_FUNC_ringbuf_reserve,
    bpf_func_id::BPF_FUNC_ringbuf_submit,
    bpf_func_id::BPF_FUNC_ringbuf_discard,
];

/// The program types fwd loads.
const PROGRAMS: [(ProgramType, &str); 2] = [
    (ProgramType::Xdp, "XDP programs"),
    (ProgramType::SchedClassifier, "TC classifier programs"),
];

/// The helper ids the programs of `object` call (not BPF-to-BPF calls or kfuncs).
pub(super) fn helpers_called(object: &aya_obj::Object) -> Vec<u32> {
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    let mut ids: Vec<u32> = object
        .functions
        .values()
        .flat_map(|f| f.instructions.iter())
        .filter(|insn| insn.code == CALL && insn.src_reg() == 0)
        .map(|insn| insn.imm as u32)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The map types of `object`'s maps.
fn map_types(object: &aya_obj::Object) -> Vec<MapType> {
    let mut types: Vec<MapType> = object
        .maps
        .values()
        .filter_map(|m| bpf_map_type::try_from(m.map_type()).ok())
        .filter_map(|t| MapType::try_from(t).ok())
        .collect();
    types.sort_by_key(|t| *t as u32);
    types.dedup();
    types
}

fn has_struct(btf: Option<&Btf>, name: &str) -> Option<bool> {
    btf.map(|b| b.id_by_type_name_kind(name, BtfKind::Struct).is_ok())
}

/// Probes the kernel for what `object` needs (once per process).
pub fn probe(object: &[u8]) -> Result<&'static Features, DatapathError> {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    if let Some(f) = FEATURES.get() {
        return Ok(f);
    }
    let parsed = aya_obj::Object::parse(object)
        .map_err(|e| DatapathError::Features(format!("reading the eBPF object: {e}")))?;
    let btf = Btf::from_sys_fs().ok();
    let version = aya::util::KernelVersion::current().ok();
    let at_least =
        |major, minor| version.is_some_and(|v| v >= aya::util::KernelVersion::new(major, minor, 0));
    let mut missing = Vec::new();
    for (program, what) in PROGRAMS {
        if !is_program_supported(program).unwrap_or(true) {
            missing.push(what.to_string());
        }
    }
    for map in map_types(&parsed) {
        if !is_map_supported(map).unwrap_or(true) {
            missing.push(format!("{map:?} maps"));
        }
    }
    for id in helpers_called(&parsed) {
        let helper = HELPERS.iter().find(|h| **h as u32 == id);
        let supported = helper.is_none_or(|h| {
            PROGRAMS
                .iter()
                .any(|(p, _)| is_helper_supported(*p, *h).unwrap_or(true))
        });
        if !supported {
            missing.push(format!("the helper {:?}", helper.expect("checked")));
        }
    }
    // Without the kernel's BTF, the link kinds are judged by the version.
    let xdp_links = has_struct(btf.as_ref(), "bpf_xdp_link").unwrap_or_else(|| at_least(5, 9));
    if !xdp_links {
        missing.push("XDP links (bpf_link for XDP, Linux 5.9+), which keep XDP programs attached when fwd stops".into());
    }
    let tcx = has_struct(btf.as_ref(), "tcx_link").unwrap_or_else(|| at_least(6, 6));
    Ok(FEATURES.get_or_init(|| Features {
        btf: btf.is_some(),
        xdp_links,
        tcx,
        missing,
    }))
}

/// Refuses a kernel that lacks what fwd needs, naming each thing.
pub fn check(object: &[u8]) -> Result<&'static Features, DatapathError> {
    let features = probe(object)?;
    if !features.missing.is_empty() {
        return Err(DatapathError::Features(format!(
            "this kernel lacks what fwd needs: {}. fwd probes features, not version numbers; a kernel with these (Linux 5.15 has all of them) runs it",
            features.missing.join(", ")
        )));
    }
    Ok(features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_helper_the_programs_call_is_probed() {
        if super::super::EBPF_OBJECT.is_empty() {
            return; // built without the `ebpf` feature (the fuzz targets)
        }
        let parsed = aya_obj::Object::parse(super::super::EBPF_OBJECT).unwrap();
        let called = helpers_called(&parsed);
        assert!(
            called.contains(&(bpf_func_id::BPF_FUNC_map_lookup_elem as u32)),
            "the reading of calls is broken: {called:?}"
        );
        let unlisted: Vec<u32> = called
            .iter()
            .copied()
            .filter(|id| !HELPERS.iter().any(|h| *h as u32 == *id))
            .collect();
        assert!(
            unlisted.is_empty(),
            "the programs call helpers {unlisted:?} that features::HELPERS does not list (add them)"
        );
        let types = map_types(&parsed);
        assert!(types.contains(&MapType::Array), "{types:?}");
    }
}
