//! Fuzz target `da_decode`: see `fulmen_fuzz::da_decode` and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulmen_fuzz::da_decode(data);
});
