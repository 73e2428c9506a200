//! Protocol parsers: pure functions and state machines on bytes. No I/O, no aya, no clocks,
//! so they can be unit-tested and fuzzed without a kernel.

pub mod http1;
pub mod resp;
