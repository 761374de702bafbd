#![no_std]
//! Library target so fwd-userspace can name this crate as a build dependency; the
//! programs live in the `fwd-ebpf` binary (src/main.rs).
