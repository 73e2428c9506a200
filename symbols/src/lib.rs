//! Symbol resolution for uprobes: ELF symbol → file offset, Go buildinfo/pclntab, DWARF
//! field offsets. Pure library (no aya). Filled in by the TLS work; empty until then.
