//! Attaching where another program already holds the hook: fwd says which program (name
//! and id) and what to do, and changes nothing. Needs root.

use fwd::datapath::{Datapath, DatapathError};
use fwd_lab::Netns;

#[test]
fn an_xdp_hook_another_program_holds_is_reported_by_name_and_id() {
    if !fwd_lab::can_run_as_root("an_xdp_hook_another_program_holds_is_reported_by_name_and_id") {
        return;
    }
    let ns = Netns::create(&format!("fwdt{}-occupied", std::process::id())).unwrap();
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"])
        .unwrap();
    ns.ip(&["link", "set", "a0", "up"]).unwrap();
    let (message, still_attached) = ns
        .run(|| {
            // The other holder: a datapath of its own (a tool, or a fwd with other pins).
            let mut first = Datapath::load().expect("loading the programs (needs root)");
            first.attach_gateway("a0").expect("the first attach");
            let mut second = Datapath::load().unwrap();
            let err = second
                .attach_gateway("a0")
                .expect_err("a second XDP program");
            let occupied = matches!(err, DatapathError::Occupied { .. });
            let attached = second.attached().len();
            (
                format!("{occupied} {err}"),
                (attached, first.attached().len()),
            )
        })
        .unwrap();
    assert!(message.starts_with("true "), "{message}");
    assert!(
        message.contains("already runs an xdp program this fwd did not attach: `fwd_xdp` (id ")
            && message.contains("bpftool net show dev a0"),
        "{message}"
    );
    // The refused datapath holds nothing; the first keeps both its hooks.
    assert_eq!(still_attached, (0, 2));
}
