//! Arbitrary bytes as the site config (`/etc/fwd/fwd.toml`): parsing must never panic, errors
//! must point into the text, and what parses must yield a selection.
#![no_main]

use std::path::Path;

use fwd::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("/etc/fwd/fwd.toml"), text) {
        Ok(config) => {
            let _ = config.selection(fwd_fuzz::TODAY);
        }
        Err(err) => fwd_fuzz::check_error_location(text, &err),
    }
});
