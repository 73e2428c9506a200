//! Fuzz the whole userspace pipeline with scripted kernel event sequences (agent/src/fuzz.rs).
//! Run: cargo xtask build-ebpf && cd fuzz && cargo +nightly fuzz run pipeline
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zerotrace::fuzz::pipeline(data);
});
