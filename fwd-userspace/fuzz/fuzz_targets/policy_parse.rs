//! Arbitrary bytes as a vendor policy file: parse, compile what parses, evaluate what
//! compiles (checks: `fwd_fuzz::check_policy_files`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        fwd_fuzz::check_policy_files([("fuzz.toml", text)]);
    }
});
