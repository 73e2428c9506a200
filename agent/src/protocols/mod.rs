//! Protocol parsers: pure functions and state machines on bytes. No I/O, no aya, no clocks,
//! so they can be unit-tested and fuzzed without a kernel.

pub mod db;
mod framing;
pub mod fuzz;
pub mod http1;
pub mod memcached;
pub mod mysql;
pub mod postgres;
pub mod redis;
mod redis_commands;
pub mod resp;
pub mod sql;
