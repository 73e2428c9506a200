//! /proc/PID/maps: the file-backed objects a process has mapped executable.

use std::path::PathBuf;

/// Paths of executable file mappings, deduplicated, in order of first appearance. Takes the
/// text of /proc/PID/maps so it can be tested without a process.
pub fn executable_objects(maps: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        // offset, dev, inode, then the path (which may contain spaces).
        let rest: Vec<&str> = fields.collect();
        if rest.len() < 4 || !perms.contains('x') {
            continue;
        }
        let path = rest[3..].join(" ");
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let path = PathBuf::from(path);
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Reads /proc/PID/maps; the paths are as the process sees them (its mount namespace), so
/// callers that live elsewhere should open them through /proc/PID/root.
pub fn process_objects(pid: u32) -> std::io::Result<Vec<PathBuf>> {
    Ok(executable_objects(&std::fs::read_to_string(format!("/proc/{pid}/maps"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps() {
        let text = "\
55d0c0000000-55d0c0001000 r--p 00000000 fe:01 123 /usr/bin/curl
55d0c0001000-55d0c0002000 r-xp 00001000 fe:01 123 /usr/bin/curl
7f00000000-7f00001000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f00001000-7f00002000 r-xp 00000000 00:00 0 
7f00002000-7f00003000 r-xp 00000000 fe:01 789 /tmp/my lib.so
7f00003000-7f00004000 r-xp 00000000 fe:01 790 /tmp/gone.so (deleted)
7ffc0000-7ffc1000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(executable_objects(text), vec![PathBuf::from("/usr/bin/curl"), PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3"), PathBuf::from("/tmp/my lib.so")]);
    }
}
