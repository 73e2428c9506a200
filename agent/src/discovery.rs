//! Which processes the probes trace, changed at any time: before the programs are attached the
//! pid bitmap is written directly; afterwards the fork and exit hooks change it with atomic
//! adds, and a read-modify-write from here could undo one of theirs. So after attach the agent
//! calls its own marker function, `zerotrace_discovery_mark`, and a uprobe on it (attached to
//! this process alone, `ebpf-probes/probes/src/discovery.rs`) makes the change in the kernel
//! with the same atomic add. Children of a traced process are traced by the fork hook, and
//! exited processes leave the bitmap by the exit hook, whoever added them.

use anyhow::{Context, Result};
use zerotrace_abi::names::program;

use crate::probes::{Probes, UprobeLink};

/// The function the discovery uprobe is attached to: the probe reads its two arguments. Never
/// inlined and its arguments kept live, so every call really enters it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn zerotrace_discovery_mark(pid: u32, traced: u32) {
    std::hint::black_box((pid, traced));
}

#[derive(Default)]
pub struct Discovery {
    /// The uprobe on `zerotrace_discovery_mark`, attached at the first change after attach.
    marker: Option<UprobeLink>,
}

impl Discovery {
    /// Traces `pid` (and its future children) from now on.
    pub fn add(&mut self, probes: &mut Probes, pid: u32) -> Result<()> {
        if probes.is_attached() {
            self.mark(probes, pid, true)?;
        } else {
            probes.trace_pid(pid)?;
        }
        Ok(())
    }

    /// Stops tracing `pid` (its children already forked stay traced until they exit).
    pub fn remove(&mut self, probes: &mut Probes, pid: u32) -> Result<()> {
        self.mark(probes, pid, false)
    }

    fn mark(&mut self, probes: &mut Probes, pid: u32, traced: bool) -> Result<()> {
        if self.marker.is_none() {
            let (path, offset) = own_code_offset(zerotrace_discovery_mark as *const () as usize)?;
            let link = probes
                .attach_uprobe(program::DISCOVERY_MARK, &path, offset, None, Some(std::process::id()))
                .context("attaching the discovery probe to the agent itself (needed to add processes after start)")?;
            self.marker = Some(link);
        }
        zerotrace_discovery_mark(pid, u32::from(traced));
        Ok(())
    }
}

/// The file and file offset of code at `address` in this process, from /proc/self/maps: what
/// a uprobe is attached by. Works on stripped binaries (no symbol lookup).
fn own_code_offset(address: usize) -> Result<(std::path::PathBuf, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(_dev), Some(_inode), Some(path)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16), u64::from_str_radix(offset, 16)) else { continue };
        if (start..end).contains(&address) && path.starts_with('/') {
            return Ok((path.into(), offset + (address - start) as u64));
        }
    }
    anyhow::bail!("the agent's own code at {address:#x} is in no file mapping of /proc/self/maps")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_in_our_own_executable() {
        let (path, offset) = own_code_offset(zerotrace_discovery_mark as *const () as usize).expect("mapped");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        assert_eq!(path, exe);
        // The offset points at the function's code in the file.
        let file = std::fs::read(&path).expect("read exe");
        assert!((offset as usize) < file.len());
    }
}
