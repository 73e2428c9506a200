//! Reading a user-space `struct sockaddr` into the ABI's `SockAddr`.

use aya_ebpf::helpers::bpf_probe_read_user;
use zerotrace_abi::{SockAddr, stat};

use crate::maps::count;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The first 8 bytes every inet family shares: family, port, and (sockaddr_in) the IPv4
/// address or (sockaddr_in6) the flow info.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrHead {
    family: u16,
    port_be: u16,
    word: [u8; 4],
}

/// The address at `ptr`: `Ok` with family 0 for a family we do not decode, `Err` (counted as a
/// read fault) when the memory cannot be read. Only the bytes of the family's own struct are
/// read: a 16-byte sockaddr_in can end a page after which nothing is mapped (Go allocates one
/// per connect on its heap), and reading 28 bytes there failed and lost the connection.
#[inline(always)]
pub fn read_user_sockaddr(ptr: u64) -> Result<SockAddr, ()> {
    let mut out = SockAddr::default();
    if ptr == 0 {
        return Ok(out);
    }
    // SAFETY: bpf_probe_read_user validates the user pointer and fails instead of faulting.
    let head = unsafe { bpf_probe_read_user(ptr as *const SockaddrHead) }.map_err(|_| count(stat::READ_FAULT))?;
    match head.family {
        AF_INET => {
            out.family = AF_INET;
            out.port = u16::from_be(head.port_be);
            out.addr[..4].copy_from_slice(&head.word);
        }
        AF_INET6 => {
            // SAFETY: as above; sin6_addr follows the 8-byte head.
            out.addr = unsafe { bpf_probe_read_user((ptr + 8) as *const [u8; 16]) }.map_err(|_| count(stat::READ_FAULT))?;
            out.family = AF_INET6;
            out.port = u16::from_be(head.port_be);
        }
        _ => {}
    }
    Ok(out)
}
