//! Reading a user-space `struct sockaddr` into the ABI's `SockAddr`.

use aya_ebpf::helpers::bpf_probe_read_user;
use zerotrace_abi::SockAddr;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// sockaddr_in6 is the largest family we decode (28 bytes); sockaddr_in fits in its prefix.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawSockaddr {
    family: u16,
    port_be: u16,
    /// sockaddr_in: the IPv4 address. sockaddr_in6: flowinfo.
    word: [u8; 4],
    addr6: [u8; 16],
    scope: u32,
}

/// Returns the address, or a zeroed one (family 0) for other families or unreadable memory.
#[inline(always)]
pub fn read_user_sockaddr(ptr: u64) -> SockAddr {
    let mut out = SockAddr::default();
    if ptr == 0 {
        return out;
    }
    // SAFETY: bpf_probe_read_user validates the user pointer and fails instead of faulting.
    let Ok(raw) = (unsafe { bpf_probe_read_user(ptr as *const RawSockaddr) }) else {
        return out;
    };
    match raw.family {
        AF_INET => {
            out.family = AF_INET;
            out.port = u16::from_be(raw.port_be);
            out.addr[..4].copy_from_slice(&raw.word);
        }
        AF_INET6 => {
            out.family = AF_INET6;
            out.port = u16::from_be(raw.port_be);
            out.addr = raw.addr6;
        }
        _ => {}
    }
    out
}
