//! zerotrace agent library: one module per stage of the data flow.
//!
//! `probes` (load, attach) → `events` (ring buffer → records) → `conn` (per-connection state)
//! → `protocols` (pure parsers) → `spans` (semantic conventions) → `link` (trace context)
//! → `export` (sinks). `pipeline` wires the middle stages together without any I/O so it can
//! be driven by recorded events; `agent` runs it all. `compare` measures the spans against a
//! language agent's.

pub mod agent;
pub mod budget;
pub mod callbacks;
pub mod cli;
pub mod compare;
pub mod config;
pub mod conn;
pub mod discovery;
pub mod events;
pub mod export;
pub mod fleet;
pub mod fuzz;
pub mod kubernetes;
pub mod link;
pub mod memory_bio;
pub mod pipeline;
pub mod preflight;
pub mod probes;
pub mod process;
pub mod protocols;
pub mod red;
pub mod runtime;
pub mod sampling;
pub mod selectors;
pub mod self_metrics;
pub mod spans;
pub mod targets;
pub mod tls;
pub mod traceparent;
