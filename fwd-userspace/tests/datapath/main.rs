//! Fixtures for the kernel programs, run through BPF_PROG_TEST_RUN on the real eBPF object:
//! every parse path and verdict, then a bypass suite of frames that must never pass when
//! their destination is not allowed. Every case asserts the verdict, the exact change of
//! every reason counter and the exact change of every rule counter (packets, and bytes =
//! packets x frame length).
//!
//! Outbound frames run through both `fwd_xdp` and `fwd_tc_out`, which must agree on all of
//! it; inbound frames run through `fwd_tc_in`. Each test loads its own datapath (its own
//! maps) with the policy below installed. Needs root (BPF); `cargo xtask test` runs it.
//!
//! `policy`, `frames` and `fixture` are the support; the tests are `builder`, `verdicts`,
//! `bypass` and `findings`.

mod builder;
mod bypass;
mod findings;
mod fixture;

mod policy;
mod verdicts;
