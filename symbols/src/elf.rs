//! ELF function symbols to uprobe file offsets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::SymbolError;

/// The defined function symbols of one ELF file with their virtual addresses, and its
/// loadable segments, so many look-ups cost one parse.
pub struct ElfSymbols {
    path: PathBuf,
    /// Unversioned name → virtual address.
    functions: HashMap<String, u64>,
    /// (vaddr, memsz, file offset) of every PT_LOAD segment.
    segments: Vec<(u64, u64, u64)>,
}

/// `SSL_write@@OPENSSL_3.0.0` and `SSL_write@OPENSSL_1_1_0` both name `SSL_write`.
pub fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

impl ElfSymbols {
    /// Parses the symbols of `data` (the file's bytes; `path` is for messages).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self, SymbolError> {
        let parse_err = |reason: String| SymbolError::Parse { path: path.to_path_buf(), reason };
        let file = object::File::parse(data).map_err(|e| parse_err(e.to_string()))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(parse_err("not ELF".to_string()));
        }
        let mut functions = HashMap::new();
        // .dynsym first (what the dynamic linker exports), then .symtab (survives unless
        // stripped; static OpenSSL inside an executable is often only there).
        for symbol in file.dynamic_symbols().chain(file.symbols()) {
            if symbol.kind() != SymbolKind::Text || !symbol.is_definition() || symbol.address() == 0 {
                continue;
            }
            if let Ok(name) = symbol.name() {
                functions.entry(unversioned(name).to_string()).or_insert(symbol.address());
            }
        }
        let segments = file
            .segments()
            .map(|s| (s.address(), s.size(), s.file_range().0))
            .collect();
        Ok(Self { path: path.to_path_buf(), functions, segments })
    }

    /// Maps the file rather than reading it: `node` is ~100 MB, and only its symbol tables
    /// are touched, so the agent's memory does not grow by the executable's size.
    pub fn read(path: &Path) -> Result<Self, SymbolError> {
        let io = |source| SymbolError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: a read-only private mapping that lives only while we parse. Package upgrades
        // replace binaries by rename, which leaves this mapping on the old file; a file
        // truncated in place while we parse it is the one case this does not survive.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, &map)
    }

    pub fn defines(&self, symbol: &str) -> bool {
        self.functions.contains_key(symbol)
    }

    /// The file offset of `symbol`'s first instruction: what a uprobe attaches at. For PIE,
    /// non-PIE and shared objects alike it is the address relative to its PT_LOAD segment
    /// plus that segment's file offset.
    pub fn uprobe_offset(&self, symbol: &str) -> Result<u64, SymbolError> {
        let address = *self.functions.get(symbol).ok_or_else(|| SymbolError::NotFound { path: self.path.clone(), symbol: symbol.to_string() })?;
        self.file_offset(address).ok_or_else(|| SymbolError::NotInSegment { path: self.path.clone(), symbol: symbol.to_string(), address })
    }

    /// Virtual address → file offset through the loadable segments.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(vaddr, size, _)| address >= *vaddr && address < vaddr.saturating_add(*size))
            .map(|(vaddr, _, offset)| address - vaddr + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names() {
        assert_eq!(unversioned("SSL_write@@OPENSSL_3.0.0"), "SSL_write");
        assert_eq!(unversioned("SSL_read@OPENSSL_1_1_0"), "SSL_read");
        assert_eq!(unversioned("main"), "main");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let err = ElfSymbols::parse(Path::new("junk"), b"\x7fELF not really").err().expect("error");
        assert!(matches!(err, SymbolError::Parse { .. }), "{err}");
    }
}
