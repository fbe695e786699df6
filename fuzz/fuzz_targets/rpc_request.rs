//! Fuzz target `rpc_request`: see `fulmen_fuzz::rpc_request` and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulmen_fuzz::rpc_request(data);
});
