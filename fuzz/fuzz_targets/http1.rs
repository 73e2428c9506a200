//! Fuzz the HTTP/1 parsers: arbitrary bytes, cut into arbitrary segments with arbitrary gaps,
//! through both directions. Run: cargo xtask build-ebpf && cd fuzz && cargo +nightly fuzz run http1
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zerotrace::protocols::http1::fuzz_one(data);
});
