//! Go executables: the Go version (buildinfo), functions even when the symbol table is
//! stripped (pclntab, which the runtime needs and so always survives), the return
//! instructions of a function, and the struct field offsets that lead from a
//! `*crypto/tls.Conn` to its socket's fd (DWARF when present, else a built-in table).
//!
//! Return instructions instead of return probes: a uretprobe overwrites the return address on
//! the stack, and Go moves goroutine stacks and walks them (GC, tracebacks), which a foreign
//! return address breaks.
//!
//! pclntab is parsed by hand: its layout is the Go runtime's own (`runtime/symtab.go`,
//! `pcHeader` and `_func`), no maintained Rust crate reads it, and we need two fields of it.

use std::collections::HashMap;

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Register};
use object::{Object, ObjectSection};

use crate::SymbolError;
use crate::elf::ElfSymbols;

/// `.go.buildinfo` starts with this.
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// A Go executable's version and the functions asked for.
#[derive(Debug)]
pub struct GoBinary {
    /// As the toolchain wrote it, e.g. `go1.19.8`.
    pub version: String,
    /// Function name → (entry, end) virtual addresses.
    pub functions: HashMap<String, (u64, u64)>,
}

/// Reads a Go executable's version and where `wanted` functions are. `Ok(None)` when the file
/// is not a Go executable.
pub fn read(elf: &ElfSymbols, wanted: &[&str]) -> Result<Option<GoBinary>, SymbolError> {
    let file = elf.object()?;
    let Some(version) = version(elf, &file) else { return Ok(None) };
    let pclntab =
        file.section_by_name(".gopclntab").and_then(|s| s.data().ok()).ok_or_else(|| elf.parse_error("Go executable without a .gopclntab section (packed or damaged)".into()))?;
    let text = file.section_by_name(".text").map(|s| s.address()).unwrap_or(0);
    let functions = pclntab_functions(pclntab, text, wanted).map_err(|reason| elf.parse_error(format!("pclntab: {reason}")))?;
    Ok(Some(GoBinary { version, functions }))
}

/// The version string in `.go.buildinfo`: inline since Go 1.18, behind two pointers before.
fn version(elf: &ElfSymbols, file: &object::File<'_>) -> Option<String> {
    let data = file.section_by_name(".go.buildinfo")?.data().ok()?;
    if data.get(..BUILDINFO_MAGIC.len())? != BUILDINFO_MAGIC {
        return None;
    }
    let ptr_size = usize::from(*data.get(14)?);
    let flags = *data.get(15)?;
    if flags & 2 != 0 {
        // Inline: a uvarint length and the bytes, at offset 32.
        let (len, used) = uvarint(data.get(32..)?)?;
        let start = 32 + used;
        let bytes = data.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
        return String::from_utf8(bytes.to_vec()).ok();
    }
    // Go < 1.18: a pointer to a Go string header (pointer, length) at offset 16.
    let little = flags & 1 == 0;
    let word = |bytes: &[u8]| -> Option<u64> {
        Some(match (ptr_size, little) {
            (8, true) => u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?),
            (8, false) => u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            (4, true) => u64::from(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?)),
            (4, false) => u64::from(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?)),
            _ => return None,
        })
    };
    let header = word(data.get(16..)?)?;
    let header = elf.code_at(header, 2 * ptr_size)?;
    let (ptr, len) = (word(header)?, word(header.get(ptr_size..)?)?);
    let bytes = elf.code_at(ptr, usize::try_from(len).ok()?)?;
    (bytes.len() as u64 == len).then(|| String::from_utf8(bytes.to_vec()).ok()).flatten()
}

fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The pclntab layouts this reads: Go 1.16–1.17 and Go 1.18+ (1.20 changed only the magic).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Go116,
    Go118,
}

/// Finds `wanted` functions in a pclntab: (entry, end) from the function table, where each
/// function ends where the next one starts.
fn pclntab_functions(tab: &[u8], text_section: u64, wanted: &[&str]) -> Result<HashMap<String, (u64, u64)>, String> {
    let u32_at = |off: usize| -> Result<u32, String> {
        tab.get(off..off.saturating_add(4)).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| format!("truncated at {off:#x}"))
    };
    let layout = match u32_at(0)? {
        0xffff_fff0 | 0xffff_fff1 => Layout::Go118,
        0xffff_fffa => Layout::Go116,
        magic => return Err(format!("unsupported magic {magic:#x} (Go before 1.16 or not little-endian)")),
    };
    if tab.get(7) != Some(&8) {
        return Err("not a 64-bit pclntab".into());
    }
    let word = |off: usize| -> Result<u64, String> {
        tab.get(off..off.saturating_add(8)).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).ok_or_else(|| format!("truncated at {off:#x}"))
    };
    let index = |value: u64| usize::try_from(value).map_err(|_| "offset too large".to_string());
    let nfunc = index(word(8)?)?;
    // Header words after magic/pad/quantum/ptrsize (8 bytes), nfunc, nfiles: Go 1.18 adds
    // textStart before the table offsets.
    let (text_start, funcnames, functab) = match layout {
        Layout::Go118 => (word(24)?, index(word(32)?)?, index(word(64)?)?),
        Layout::Go116 => (0, index(word(24)?)?, index(word(56)?)?),
    };
    // PIE executables leave textStart to a relocation: .text is where it points.
    let text_start = if text_start == 0 { text_section } else { text_start };
    let entry_size = if layout == Layout::Go118 { 8 } else { 16 };
    let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(|| "offset overflow".to_string());
    let entry = |i: usize| -> Result<(u64, usize), String> {
        let at = add(functab, i.checked_mul(entry_size).ok_or("offset overflow")?)?;
        Ok(match layout {
            Layout::Go118 => (text_start.wrapping_add(u64::from(u32_at(at)?)), index(u64::from(u32_at(add(at, 4)?)?))?),
            Layout::Go116 => (word(at)?, index(word(add(at, 8)?)?)?),
        })
    };
    let mut found = HashMap::new();
    for i in 0..nfunc {
        let (start, func_offset) = entry(i)?;
        // `_func.nameOff` follows the entry field (u32 since 1.18, uintptr before).
        let name_field = add(add(functab, func_offset)?, if layout == Layout::Go118 { 4 } else { 8 })?;
        let name_offset = index(u64::from(u32_at(name_field)?))?;
        let name_start = add(funcnames, name_offset)?;
        let name = tab.get(name_start..).and_then(|rest| rest.split(|b| *b == 0).next()).ok_or("function name out of range")?;
        let Ok(name) = std::str::from_utf8(name) else { continue };
        if wanted.contains(&name) {
            let (end, _) = entry(i + 1)?;
            found.insert(name.to_string(), (start, end));
            if found.len() == wanted.len() {
                break;
            }
        }
    }
    Ok(found)
}

/// The virtual addresses of the return instructions in `[entry, end)`.
pub fn return_sites(elf: &ElfSymbols, entry: u64, end: u64) -> Vec<u64> {
    instructions_where(elf, entry, end, |i| matches!(i.code(), Code::Retnq | Code::Retnq_imm16))
}

/// The virtual addresses of the direct calls to `target` in `[entry, end)`. The kernel emulates
/// a `call rel32`, so a probe on one costs a single trap, where one on a `ret` (single-stepped)
/// costs two.
pub fn call_sites(elf: &ElfSymbols, entry: u64, end: u64, target: u64) -> Vec<u64> {
    instructions_where(elf, entry, end, |i| i.code() == Code::Call_rel32_64 && i.near_branch_target() == target)
}

fn instructions_where(elf: &ElfSymbols, entry: u64, end: u64, wanted: impl Fn(&Instruction) -> bool) -> Vec<u64> {
    let len = usize::try_from(end.saturating_sub(entry)).unwrap_or(0).min(1 << 20);
    let Some(code) = elf.code_at(entry, len) else { return Vec::new() };
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut sites = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if wanted(&instruction) {
            sites.push(instruction.ip());
        }
    }
    sites
}

/// The address of a function's stack check `jbe`: Go (register ABI) starts every function
/// that may grow its stack with `cmp rsp, [r14+16]` (or `lea r12, [rsp-frame]` and
/// `cmp r12, [r14+16]`: R14 is `g`, +16 its stack guard) and `jbe` to the code that grows the
/// stack and runs the function again. The kernel emulates the `jbe`, so a probe there costs one
/// trap, and the flags the compare left tell a probe whether this pass is the one that goes on
/// (see the Go TLS probes). `None` when the function does not start that way.
pub fn stack_check_jump(elf: &ElfSymbols, entry: u64) -> Option<u64> {
    let code = elf.code_at(entry, 32)?;
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut compared = None;
    for _ in 0..3 {
        if !decoder.can_decode() {
            return None;
        }
        decoder.decode_out(&mut instruction);
        match instruction.code() {
            Code::Lea_r64_m if instruction.op0_register() == Register::R12 && instruction.memory_base() == Register::RSP => {}
            Code::Cmp_r64_rm64
                if matches!(instruction.op0_register(), Register::RSP | Register::R12)
                    && instruction.memory_base() == Register::R14
                    && instruction.memory_displacement64() == 16 =>
            {
                compared = Some(instruction.op0_register());
            }
            Code::Jbe_rel8_64 | Code::Jbe_rel32_64 if compared.is_some() => return Some(instruction.ip()),
            _ => return None,
        }
    }
    None
}

/// Field offsets from a `*crypto/tls.Conn` to the socket fd:
/// `tls.Conn.conn` (a `net.Conn` interface whose data word points to a `*net.TCPConn`),
/// `net.conn.fd` (`*net.netFD`), `net.netFD.pfd` (`poll.FD`), `poll.FD.Sysfd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsConnOffsets {
    pub conn_in_tls_conn: u64,
    pub fd_in_net_conn: u64,
    pub pfd_in_net_fd: u64,
    pub sysfd_in_poll_fd: u64,
    /// Read from the binary's DWARF rather than the built-in table.
    pub from_dwarf: bool,
}

/// The layout every Go release with the register ABI (1.17 to 1.23) has had: `conn` is
/// `tls.Conn`'s first field, `fd` `net.conn`'s only one, `pfd` `netFD`'s first, and
/// `Sysfd` follows `poll.FD`'s 16-byte `fdMutex`.
pub const BUILT_IN_OFFSETS: TlsConnOffsets = TlsConnOffsets { conn_in_tls_conn: 0, fd_in_net_conn: 0, pfd_in_net_fd: 0, sysfd_in_poll_fd: 16, from_dwarf: false };

/// The offsets from DWARF when the binary has it, else the built-in table.
pub fn tls_conn_offsets(elf: &ElfSymbols) -> TlsConnOffsets {
    dwarf_offsets(elf).unwrap_or(BUILT_IN_OFFSETS)
}

fn dwarf_offsets(elf: &ElfSymbols) -> Option<TlsConnOffsets> {
    let file = elf.object().ok()?;
    // Go compresses its DWARF (SHF_COMPRESSED): each section is inflated when gimli asks.
    let section = |id: gimli::SectionId| -> Result<gimli::EndianRcSlice<gimli::LittleEndian>, gimli::Error> {
        let data = file.section_by_name(id.name()).and_then(|s| s.uncompressed_data().ok()).unwrap_or_default();
        Ok(gimli::EndianRcSlice::new(std::rc::Rc::from(&*data), gimli::LittleEndian))
    };
    let dwarf = gimli::Dwarf::load(section).ok()?;
    let wanted: [(&str, &str); 4] = [("crypto/tls.Conn", "conn"), ("net.conn", "fd"), ("net.netFD", "pfd"), ("internal/poll.FD", "Sysfd")];
    let mut found: [Option<u64>; 4] = [None; 4];
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else { continue };
        let mut entries = unit.entries();
        // The wanted struct whose members come next, and how deep below it we are.
        let mut current: Option<usize> = None;
        let mut depth = 0isize;
        while let Ok(Some((delta, entry))) = entries.next_dfs() {
            depth += delta;
            let name = || {
                let value = entry.attr_value(gimli::DW_AT_name).ok().flatten()?;
                let text = dwarf.attr_string(&unit, value).ok()?;
                String::from_utf8(text.bytes().to_vec()).ok()
            };
            if entry.tag() == gimli::DW_TAG_structure_type {
                current = name().and_then(|n| wanted.iter().position(|(s, _)| *s == n)).filter(|i| found[*i].is_none());
                depth = 0;
            } else if let (Some(i), gimli::DW_TAG_member, 1) = (current, entry.tag(), depth)
                && name().as_deref() == Some(wanted[i].1)
            {
                found[i] = entry.attr_value(gimli::DW_AT_data_member_location).ok().flatten().and_then(|v| v.udata_value());
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    Some(TlsConnOffsets { conn_in_tls_conn: found[0]?, fd_in_net_conn: found[1]?, pfd_in_net_fd: found[2]?, sysfd_in_poll_fd: found[3]?, from_dwarf: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarints() {
        assert_eq!(uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80; 11]), None);
        assert_eq!(uvarint(&[]), None);
    }

    #[test]
    fn garbage_pclntab_is_an_error_not_a_panic() {
        assert!(pclntab_functions(b"", 0, &["main.main"]).is_err());
        assert!(pclntab_functions(&[0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8], 0, &["main.main"]).is_err());
        let mut tab = vec![0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        tab.extend_from_slice(&u64::MAX.to_le_bytes());
        tab.resize(96, 0xff);
        assert!(pclntab_functions(&tab, 0, &["main.main"]).is_err());
    }
}
