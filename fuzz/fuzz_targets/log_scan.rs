//! Fuzz target `log_scan`: see `fulmen_fuzz::log_scan` and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulmen_fuzz::log_scan(data);
});
