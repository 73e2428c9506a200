//! Where in a function to put a uprobe so that the kernel does not single-step.
//!
//! A uprobe replaces an instruction with `int3`. On the trap the kernel runs the probe, then
//! must execute the displaced instruction: x86 emulates a few (push of a register, near
//! call/jmp/jcc with a relative target, `nop`) and single-steps every other one in an
//! out-of-line slot, which costs a second trap. Under a hypervisor that intercepts debug
//! exceptions, as KVM does, that second trap is a VM exit: measured here, a probe on `push`
//! costs 0.7 µs and one on `sub rsp, imm` 10 µs. Compilers start most functions with
//! `sub rsp, imm` (libssl's `SSL_read`), so probing the symbol's first byte is the slow case.
//!
//! This module finds a faster spot with the same meaning, by decoding the code (iced-x86):
//! - an emulated instruction early in the function, reached on a straight line from the entry
//!   before the stack pointer moves or an argument register is written. An entry probe there
//!   sees the arguments, and a return probe there still finds the return address at `[rsp]`;
//! - else, when the function hands its arguments unchanged to a callee (a thin wrapper such as
//!   `SSL_read_ex` around OpenSSL's internal read), such a spot in the callee.
//!
//! Nothing here is OpenSSL-specific; callers decide whether a callee keeps the contract they
//! rely on.

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, Register};

/// The System V AMD64 integer argument registers, in order.
pub const SYSV_ARGS: [Register; 6] = [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9];

/// Go's internal register ABI (Go ≥ 1.17, amd64): integer arguments in order, then R14, which
/// holds the current goroutine (`g`) that per-goroutine state is keyed on.
pub const GO_ARGS: [Register; 10] =
    [Register::RAX, Register::RBX, Register::RCX, Register::RDI, Register::RSI, Register::R8, Register::R9, Register::R10, Register::R11, Register::R14];

/// How far into a function to look for a site, in instructions: prologues are short.
const PROLOGUE_INSTRUCTIONS: usize = 12;

/// Where to attach, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// An instruction of the function itself that the kernel emulates.
    Emulated { address: u64 },
    /// The function passes its arguments unchanged to `callee`, which has an emulated site at
    /// `address`. A probe there also fires for the callee's other callers.
    Callee { callee: u64, address: u64 },
    /// No emulated site: the function's first instruction, which the kernel single-steps.
    Entry { address: u64 },
}

impl Site {
    pub fn address(&self) -> u64 {
        match *self {
            Site::Emulated { address } | Site::Callee { address, .. } | Site::Entry { address } => address,
        }
    }
}

/// Reads code: the bytes from a virtual address on, as many as are available up to `max`.
pub trait CodeSource {
    fn code_at(&self, address: u64, max: usize) -> Option<&[u8]>;
}

impl CodeSource for crate::elf::ElfSymbols {
    fn code_at(&self, address: u64, max: usize) -> Option<&[u8]> {
        crate::elf::ElfSymbols::code_at(self, address, max)
    }
}

/// The best site for a function at `function` whose arguments live in `args`.
/// `follow_callee` allows the `Callee` answer.
pub fn site(code: &dyn CodeSource, function: u64, args: &[Register], follow_callee: bool) -> Site {
    if let Some(address) = emulated_site(code, function, args) {
        return Site::Emulated { address };
    }
    if follow_callee
        && let Some(callee) = pass_through_callee(code, function, args)
        && let Some(address) = emulated_site(code, callee, args)
    {
        return Site::Callee { callee, address };
    }
    Site::Entry { address: function }
}

/// Whether the function of `size` bytes at `function` contains a direct call to `target`.
/// A size of 0 (unknown) reads up to 512 bytes.
pub fn calls(code: &dyn CodeSource, function: u64, size: u64, target: u64) -> bool {
    let len = if size == 0 { 512 } else { usize::try_from(size).unwrap_or(512).min(64 * 1024) };
    let Some(bytes) = code.code_at(function, len) else { return false };
    let mut decoder = Decoder::with_ip(64, bytes, function, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.code() == Code::Call_rel32_64 && instruction.near_branch_target() == target {
            return true;
        }
    }
    false
}

/// The kernel's x86 uprobe code executes these without single-stepping.
/// (Multi-byte nops are emulated only in the kernel's canonical encodings; they are left
/// out, and being harmless the search walks past them.)
fn kernel_emulates(instruction: &Instruction) -> bool {
    let one_byte_nop = instruction.code() == Code::Nopd && instruction.len() == 1;
    one_byte_nop || instruction.is_jcc_short_or_near() || matches!(instruction.code(), Code::Push_r64 | Code::Call_rel32_64 | Code::Jmp_rel8_64 | Code::Jmp_rel32_64)
}

/// Decodes the prologue and calls `step` on each instruction with its effects, until `step`
/// returns an answer or the prologue ends.
fn walk<T>(code: &dyn CodeSource, start: u64, mut step: impl FnMut(&Instruction, Effects) -> Option<Option<T>>) -> Option<T> {
    let bytes = code.code_at(start, PROLOGUE_INSTRUCTIONS * 15)?;
    let mut decoder = Decoder::with_ip(64, bytes, start, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    for _ in 0..PROLOGUE_INSTRUCTIONS {
        if !decoder.can_decode() {
            return None;
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return None;
        }
        let info = factory.info(&instruction);
        let written: Vec<Register> = info
            .used_registers()
            .iter()
            .filter(|r| matches!(r.access(), OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite | OpAccess::ReadCondWrite))
            .map(|r| r.register().full_register())
            .collect();
        let stores: Vec<Register> = info
            .used_memory()
            .iter()
            .filter(|m| matches!(m.access(), OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite | OpAccess::ReadCondWrite))
            .map(|m| m.base().full_register())
            .collect();
        if let Some(answer) = step(&instruction, Effects { written, stores }) {
            return answer;
        }
    }
    None
}

/// What one instruction changes.
struct Effects {
    /// Registers written, as full 64-bit registers.
    written: Vec<Register>,
    /// The base register of each memory operand written.
    stores: Vec<Register>,
}

/// The first emulated instruction reached from `start` while `[rsp]` still holds the return
/// address and the argument registers are untouched. Memory writes and control flow end the
/// search.
fn emulated_site(code: &dyn CodeSource, start: u64, args: &[Register]) -> Option<u64> {
    walk(code, start, |instruction, effects| {
        if kernel_emulates(instruction) {
            return Some(Some(instruction.ip()));
        }
        let harmless = instruction.flow_control() == FlowControl::Next && effects.stores.is_empty() && !effects.written.iter().any(|r| *r == Register::RSP || args.contains(r));
        if harmless { None } else { Some(None) }
    })
}

/// The target of the first instruction if it is a direct call reached on a straight line
/// from `start`, with the argument registers untouched on the way. Stack adjustments and
/// stores to the stack (a canary) are allowed.
fn pass_through_callee(code: &dyn CodeSource, start: u64, args: &[Register]) -> Option<u64> {
    walk(code, start, |instruction, effects| {
        if instruction.code() == Code::Call_rel32_64 {
            return Some(Some(instruction.near_branch_target()));
        }
        let harmless =
            instruction.flow_control() == FlowControl::Next && effects.stores.iter().all(|base| *base == Register::RSP) && !effects.written.iter().any(|r| args.contains(r));
        if harmless { None } else { Some(None) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code at a fixed address, for hand-assembled functions.
    struct Bytes(u64, Vec<u8>);

    impl CodeSource for Bytes {
        fn code_at(&self, address: u64, max: usize) -> Option<&[u8]> {
            let start = usize::try_from(address.checked_sub(self.0)?).ok()?;
            let bytes = self.1.get(start..)?;
            Some(&bytes[..bytes.len().min(max)])
        }
    }

    const BASE: u64 = 0x1000;

    /// Code at BASE: `before`, `call 0x1020`, `after`; int3 padding; at 0x1020 `push r13; ret`.
    fn with_callee_at_0x1020(before: &[u8], after: &[u8]) -> Bytes {
        let mut bytes = before.to_vec();
        let next = BASE as i32 + bytes.len() as i32 + 5;
        bytes.push(0xe8);
        bytes.extend_from_slice(&(0x1020 - next).to_le_bytes());
        bytes.extend_from_slice(after);
        bytes.resize(0x20, 0xcc);
        bytes.extend_from_slice(&[0x41, 0x55, 0xc3]);
        Bytes(BASE, bytes)
    }

    #[test]
    fn a_push_first_is_its_own_site() {
        // push r13; push r12; sub rsp, 0x38; ret
        let code = Bytes(BASE, vec![0x41, 0x55, 0x41, 0x54, 0x48, 0x83, 0xec, 0x38, 0xc3]);
        assert_eq!(site(&code, BASE, &SYSV_ARGS, true), Site::Emulated { address: BASE });
    }

    #[test]
    fn endbr64_then_push_probes_the_push() {
        // endbr64; push rbp; mov rbp, rsp; ret
        let code = Bytes(BASE, vec![0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xc3]);
        assert_eq!(site(&code, BASE, &SYSV_ARGS, true), Site::Emulated { address: BASE + 4 });
    }

    #[test]
    fn a_thin_wrapper_leads_to_its_callee() {
        // 0x1000: sub rsp, 8; call 0x1020; add rsp, 8; ret
        // 0x1020: push r13; ...
        let code = with_callee_at_0x1020(&[0x48, 0x83, 0xec, 0x08], &[0x48, 0x83, 0xc4, 0x08, 0xc3]);
        assert_eq!(site(&code, BASE, &SYSV_ARGS, true), Site::Callee { callee: 0x1020, address: 0x1020 });
        assert_eq!(site(&code, BASE, &SYSV_ARGS, false), Site::Entry { address: BASE });
        assert!(calls(&code, BASE, 14, 0x1020));
        assert!(!calls(&code, BASE, 14, 0x1030));
    }

    #[test]
    fn a_wrapper_that_changes_an_argument_is_not_followed() {
        // sub rsp, 8; mov rcx, rsp; call 0x1020  (a 4th argument of its own)
        let code = with_callee_at_0x1020(&[0x48, 0x83, 0xec, 0x08, 0x48, 0x89, 0xe1], &[]);
        assert_eq!(site(&code, BASE, &SYSV_ARGS, true), Site::Entry { address: BASE });
        // With three arguments, rcx is free and the wrapper passes them through.
        assert_eq!(site(&code, BASE, &SYSV_ARGS[..3], true), Site::Callee { callee: 0x1020, address: 0x1020 });
    }

    #[test]
    fn a_stack_move_before_the_branch_keeps_the_entry() {
        // sub rsp, 0x18; test edx, edx; js +0x2f  (SSL_read's shape: the jcc comes too late)
        let code = Bytes(BASE, vec![0x48, 0x83, 0xec, 0x18, 0x85, 0xd2, 0x78, 0x2f, 0xc3]);
        assert_eq!(site(&code, BASE, &SYSV_ARGS, true), Site::Entry { address: BASE });
    }

    #[test]
    fn go_stack_check_probes_the_conditional_jump() {
        // cmp rsp, [r14+0x10]; jbe +0x40  (every Go function's prologue)
        let code = Bytes(BASE, vec![0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55]);
        assert_eq!(site(&code, BASE, &GO_ARGS, false), Site::Emulated { address: BASE + 4 });
    }

    #[test]
    fn an_argument_write_ends_the_search() {
        // xor edi, edi; push rbp
        let code = Bytes(BASE, vec![0x31, 0xff, 0x55]);
        assert_eq!(site(&code, BASE, &SYSV_ARGS, true), Site::Entry { address: BASE });
    }

    #[test]
    fn garbage_and_missing_code_fall_back_to_the_entry() {
        let code = Bytes(BASE, vec![0x0f, 0x0b, 0xff, 0xff]);
        assert_eq!(site(&code, BASE, &SYSV_ARGS, true), Site::Entry { address: BASE });
        assert_eq!(site(&code, 0x9000, &SYSV_ARGS, true), Site::Entry { address: 0x9000 });
        assert!(!calls(&code, 0x9000, 0, BASE));
    }
}
