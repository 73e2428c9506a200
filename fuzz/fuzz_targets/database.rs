//! Fuzz the database and cache parsers (PostgreSQL, MySQL, Redis, memcached) and the SQL
//! masker: the first byte picks one. Run: cargo xtask build-ebpf && cd fuzz && cargo +nightly fuzz run database
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zerotrace::protocols::fuzz::database(data);
});
