//! Symbol resolution for uprobes. Pure library: no aya, no kernel.
//!
//! - [`elf`]: an ELF function symbol → the file offset a uprobe attaches at, for PIE and
//!   non-PIE executables and shared libraries, from .dynsym and .symtab, including versioned
//!   names (`SSL_write@@OPENSSL_3.0.0`).
//! - [`maps`]: which objects a process has mapped (from /proc/PID/maps text), so the caller can
//!   find the one that provides a symbol: `libssl.so.3`, or OpenSSL linked into the executable.
//!
//! - [`site`]: where in a function a uprobe avoids the kernel's single-step (x86-64 decoding).
//!
//! - [`go`]: Go executables: version (buildinfo), functions from pclntab (stripped binaries
//!   too), return instructions, and the struct offsets from `*tls.Conn` to the socket fd
//!   (DWARF, else a built-in table).

pub mod elf;
pub mod go;
pub mod maps;
pub mod site;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a readable ELF object: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path} does not define {symbol}")]
    NotFound { path: PathBuf, symbol: String },
    #[error("{symbol} in {path} lies outside every loadable segment (address {address:#x})")]
    NotInSegment { path: PathBuf, symbol: String, address: u64 },
}
