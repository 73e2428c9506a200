//! What to trace: PIDs with their descendants, and cgroup v2 directories with their
//! sub-cgroups, validated up front with messages that say what to do.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("process {0} does not exist; check the PID (ps -e) and try again")]
    NoSuchPid(u32),
    #[error("{0} is not a cgroup v2 directory; pass a directory under the cgroup2 mount (see `mount -t cgroup2`), e.g. /sys/fs/cgroup/unified/<group>")]
    NotCgroup(PathBuf),
    #[error("nothing to trace: give --pid PID or --cgroup PATH")]
    Nothing,
    #[error("process {0} is zerotrace itself, which never traces itself; give the PID of the process to trace")]
    Itself(u32),
}

fn ppid_of(pid: u32) -> Option<u32> {
    crate::process::stat_after_name(pid)?.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc").map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()).unwrap_or_default()
}

/// The given PIDs plus all their current descendants (nginx workers under their master).
/// The agent itself is never among them: started from a traced shell it is a descendant, and
/// its own export connections would become spans.
pub fn pids_with_descendants(roots: &[u32]) -> Result<Vec<u32>, TargetError> {
    let me = std::process::id();
    for &pid in roots {
        if pid == me {
            return Err(TargetError::Itself(pid));
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(TargetError::NoSuchPid(pid));
        }
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(ppid) = ppid_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut seen: HashSet<u32> = HashSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if seen.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    seen.remove(&me);
    let mut out: Vec<u32> = seen.into_iter().collect();
    out.sort_unstable();
    Ok(out)
}

fn is_cgroup2(path: &Path) -> bool {
    path.join("cgroup.procs").exists() && path.join("cgroup.controllers").exists()
}

/// The cgroup id (directory inode, as bpf_get_current_cgroup_id returns) of a cgroup v2
/// directory and of every sub-directory below it.
pub fn cgroup_ids(dir: &Path) -> Result<Vec<u64>, TargetError> {
    if !is_cgroup2(dir) {
        return Err(TargetError::NotCgroup(dir.to_path_buf()));
    }
    let mut ids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(meta) = fs::metadata(&d) {
            ids.push(meta.ino());
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    Ok(ids)
}

/// Processes currently in a cgroup tree (for resource lookups and liveness).
pub fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    let me = std::process::id();
    pids.retain(|&p| p != me);
    pids
}

/// Whether the process still runs. A zombie (exited, not yet reaped by its parent) does not:
/// it will never make another syscall.
pub fn is_alive(pid: u32) -> bool {
    crate::process::stat_after_name(pid).is_some_and(|rest| rest.split_whitespace().next().is_some_and(|state| state != "Z" && state != "X"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_are_not_alive() {
        assert!(is_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        // Exited but not reaped: a zombie until wait().
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_alive(pid), "an exited, unreaped child counts as gone");
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "still a zombie");
        child.wait().expect("reap");
        assert!(!is_alive(pid));
    }
}
