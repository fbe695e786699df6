//! Fuzz target `log_payload`: see `fulmen_fuzz::log_payload` and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulmen_fuzz::log_payload(data);
});
