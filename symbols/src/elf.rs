//! ELF function symbols to uprobe file offsets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::SymbolError;

/// The defined function symbols of one ELF file with their virtual addresses, its loadable
/// segments, and its bytes (for the code of the functions probed), so many look-ups cost one
/// parse.
pub struct ElfSymbols {
    path: PathBuf,
    /// Unversioned name → (virtual address, size in bytes; 0 when the symbol gives none).
    functions: HashMap<String, (u64, u64)>,
    segments: Vec<Segment>,
    bytes: Bytes,
}

/// One PT_LOAD segment.
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
}

/// The file's bytes: mapped when read from disk, owned when handed in.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Owned(bytes) => bytes,
        }
    }
}

/// `SSL_write@@OPENSSL_3.0.0` and `SSL_write@OPENSSL_1_1_0` both name `SSL_write`.
pub fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

impl ElfSymbols {
    /// Parses the symbols of `data` (the file's bytes; `path` is for messages).
    pub fn parse(path: &Path, data: Vec<u8>) -> Result<Self, SymbolError> {
        Self::parse_bytes(path, Bytes::Owned(data))
    }

    fn parse_bytes(path: &Path, bytes: Bytes) -> Result<Self, SymbolError> {
        let data: &[u8] = &bytes;
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
                functions.entry(unversioned(name).to_string()).or_insert((symbol.address(), symbol.size()));
            }
        }
        let segments = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                Segment { vaddr: s.address(), memsz: s.size(), offset, filesz }
            })
            .collect();
        Ok(Self { path: path.to_path_buf(), functions, segments, bytes })
    }

    /// Maps the file rather than reading it: `node` is ~100 MB, and only its symbol tables
    /// are touched, so the agent's memory does not grow by the executable's size.
    pub fn read(path: &Path) -> Result<Self, SymbolError> {
        let io = |source| SymbolError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: a read-only private mapping, kept while the symbols are in use (the code of
        // probed functions is read from it). Package upgrades replace binaries by rename, which
        // leaves this mapping on the old file; a file truncated in place while we use it is the
        // one case this does not survive.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse_bytes(path, Bytes::Mapped(map))
    }

    /// The virtual address of a data symbol of the symbol table (a Go itab, say), when the file
    /// keeps it. A scan of the table: for a few look-ups per executable, not per event.
    pub fn data_address(&self, symbol: &str) -> Option<u64> {
        let file = self.object().ok()?;
        file.symbols().find(|s| s.is_definition() && s.name() == Ok(symbol)).map(|s| s.address())
    }

    /// Whether the executable loads at the addresses it was linked for (not position
    /// independent): its symbols' addresses are then the running process's.
    pub fn fixed_addresses(&self) -> bool {
        self.object().is_ok_and(|o| o.kind() == object::ObjectKind::Executable)
    }

    /// The parsed file, for sections (the bytes were checked to parse when read).
    pub fn object(&self) -> Result<object::File<'_>, SymbolError> {
        object::File::parse(&*self.bytes).map_err(|e| self.parse_error(e.to_string()))
    }

    pub(crate) fn parse_error(&self, reason: String) -> SymbolError {
        SymbolError::Parse { path: self.path.clone(), reason }
    }

    pub fn defines(&self, symbol: &str) -> bool {
        self.functions.contains_key(symbol)
    }

    /// Whether any symbol, code or data, has this name (a BPF object's maps and globals).
    pub fn has_symbol(&self, symbol: &str) -> bool {
        self.object().is_ok_and(|o| o.symbols().chain(o.dynamic_symbols()).any(|s| s.name() == Ok(symbol)))
    }

    /// The file offset of `symbol`'s first instruction: what a uprobe attaches at. For PIE,
    /// non-PIE and shared objects alike it is the address relative to its PT_LOAD segment
    /// plus that segment's file offset.
    pub fn uprobe_offset(&self, symbol: &str) -> Result<u64, SymbolError> {
        let address = self.address(symbol)?;
        self.file_offset(address).ok_or_else(|| SymbolError::NotInSegment { path: self.path.clone(), symbol: symbol.to_string(), address })
    }

    /// The virtual address of a defined function.
    pub fn address(&self, symbol: &str) -> Result<u64, SymbolError> {
        self.functions.get(symbol).map(|(address, _)| *address).ok_or_else(|| SymbolError::NotFound { path: self.path.clone(), symbol: symbol.to_string() })
    }

    /// The size the symbol table gives a function, 0 when it gives none.
    pub fn size(&self, symbol: &str) -> u64 {
        self.functions.get(symbol).map_or(0, |(_, size)| *size)
    }

    /// Virtual address → file offset through the loadable segments.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        self.segment(address).map(|s| address - s.vaddr + s.offset)
    }

    fn segment(&self, address: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| address >= s.vaddr && address < s.vaddr.saturating_add(s.memsz))
    }

    /// The file's bytes from virtual address `address` to the end of its segment's file part,
    /// at most `max` of them: the code a disassembler reads.
    pub fn code_at(&self, address: u64, max: usize) -> Option<&[u8]> {
        let segment = self.segment(address)?;
        let start = usize::try_from(address - segment.vaddr + segment.offset).ok()?;
        let end = usize::try_from(segment.offset.saturating_add(segment.filesz)).ok()?.min(self.bytes.len());
        let bytes = self.bytes.get(start..end)?;
        Some(&bytes[..bytes.len().min(max)])
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
        let err = ElfSymbols::parse(Path::new("junk"), b"\x7fELF not really".to_vec()).err().expect("error");
        assert!(matches!(err, SymbolError::Parse { .. }), "{err}");
    }
}
