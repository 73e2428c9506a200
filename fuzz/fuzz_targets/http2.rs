//! Fuzz the HTTP/2 framer, HPACK decoder and stream pairing: arbitrary frames after a
//! preface, cut into arbitrary segments with arbitrary gaps, in both directions.
//! Run: cargo xtask build-ebpf && cd fuzz && cargo +nightly fuzz run http2
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zerotrace::protocols::http2::fuzz_one(data);
});
