//! Protocol parsers: pure functions and state machines on bytes. No I/O, no aya, no clocks,
//! so they can be unit-tested and fuzzed without a kernel.
//!
//! `parser` is the interface every protocol implements, `message` what parsers emit, and
//! `registry` the list of protocols and how each is recognised.

pub mod amqp;
mod bytes;
mod envelope;
mod framing;
pub mod fuzz;
pub mod http1;
pub mod http2;
pub mod kafka;
pub mod memcached;
pub mod message;
pub mod mqtt;
pub mod mysql;
pub mod nats;
pub mod parser;
pub mod postgres;
pub mod redis;
mod redis_commands;
pub mod registry;
pub mod resp;
pub mod sql;
#[cfg(test)]
mod toy;
