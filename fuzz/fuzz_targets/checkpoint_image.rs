//! Fuzz target `checkpoint_image`: see `fulmen_fuzz::checkpoint_image` and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulmen_fuzz::checkpoint_image(data);
});
