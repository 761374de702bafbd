//! Generated policy directories (one to three vendor files of mostly valid rules with
//! overlapping networks and ports) through the parser, the compiler and the evaluator:
//! reaches the compiler far more often than `policy_parse`'s byte-level mutation.
//! `cargo fuzz fmt policy_compile ARTIFACT` prints the files of a failing input.
#![no_main]

use fwd_fuzz::GeneratedPolicies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: GeneratedPolicies| {
    fwd_fuzz::check_policy_files(
        input
            .files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str())),
    );
});
