//! Fuzz target `tx_decode`: see `fulmen_fuzz::tx_decode` and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulmen_fuzz::tx_decode(data);
});
