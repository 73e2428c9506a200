//! A process's Kubernetes identity, read from the node alone (no API access): the pod's uid
//! from its cgroup path, the namespace from the pod's service-account file (through
//! /proc/PID/root), and the pod's name from the container's `HOSTNAME`, which the kubelet sets
//! to it.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// What the node says of a process's pod. Every field is None outside Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// `k8s.pod.uid`.
    pub pod_uid: Option<String>,
    /// `k8s.namespace.name`.
    pub namespace: Option<String>,
    /// `k8s.pod.name`.
    pub pod_name: Option<String>,
}

impl PodIdentity {
    /// Reads `pid`'s identity; `hostname` is its `HOSTNAME` environment variable.
    pub fn of(pid: u32, cgroup_file: &str, hostname: Option<&str>) -> PodIdentity {
        let pod_uid = pod_uid_from_cgroup(cgroup_file);
        let namespace = pod_uid.as_ref().and_then(|_| {
            let root = PathBuf::from(format!("/proc/{pid}/root"));
            let file = resolve_in_root(&root, "var/run/secrets/kubernetes.io/serviceaccount/namespace")?;
            let text = fs::read_to_string(file).ok()?;
            Some(text.trim().to_string()).filter(|n| !n.is_empty())
        });
        // The kubelet sets a container's HOSTNAME to its pod's name (unless the pod sets
        // `hostname`, which is rare and then still names the pod to its users).
        let pod_name = pod_uid.as_ref().and(hostname).map(str::to_string).filter(|n| !n.is_empty());
        PodIdentity { pod_uid, namespace, pod_name }
    }

    /// The resource attributes it gives.
    pub fn attributes(&self) -> Vec<(String, String)> {
        [("k8s.pod.uid", &self.pod_uid), ("k8s.namespace.name", &self.namespace), ("k8s.pod.name", &self.pod_name)]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
            .collect()
    }
}

/// The pod uid in a cgroup path, as the kubelet names pod cgroups: with the cgroupfs driver
/// `/kubepods/burstable/pod<uid>/<container>`, with the systemd driver
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, '_' for '-'>.slice/…`.
pub fn pod_uid_from_cgroup(cgroup_file: &str) -> Option<String> {
    for line in cgroup_file.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if !path.contains("kubepods") {
            continue;
        }
        for part in path.split('/') {
            let part = part.trim_end_matches(".slice");
            let Some(at) = part.rfind("pod") else { continue };
            let uid = part[at + 3..].replace('_', "-");
            if is_uuid(&uid) {
                return Some(uid.to_ascii_lowercase());
            }
        }
    }
    None
}

/// `path` inside the directory tree rooted at `root` (a process's `/proc/PID/root`), following
/// symlinks as that process would: an absolute target restarts from `root`, never from the
/// agent's own `/`. Container images link /var/run to /run, and the kubelet's mount then sits
/// at /run/secrets; the kernel would resolve that absolute link against the reader's root.
/// Hand-written because it must stay under `root`, which `fs::canonicalize` does not.
fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    // Links followed before giving up (the kernel's own limit is 40).
    let mut links = 40;
    let mut pending: Vec<std::ffi::OsString> = Path::new(path).components().rev().filter_map(|c| if let Component::Normal(n) = c { Some(n.to_owned()) } else { None }).collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = root.join(resolved.iter().collect::<PathBuf>()).join(&part);
        match fs::read_link(&candidate) {
            Ok(target) => {
                links -= 1;
                if links == 0 {
                    return None;
                }
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Err(_) => resolved.push(part),
        }
    }
    Some(root.join(resolved.iter().collect::<PathBuf>()))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.bytes().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == b'-' } else { c.is_ascii_hexdigit() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cgroup paths as the kubelet lays them out with each driver and runtime.
    #[test]
    fn pod_uids_from_both_cgroup_drivers() {
        let uid = "5f3c2a7e-9b1d-4c8e-a2f4-0b6d8e1c3a59";
        let systemd = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f3c2a7e_9b1d_4c8e_a2f4_0b6d8e1c3a59.slice/cri-containerd-3b1f2c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b.scope";
        let cgroupfs = "0::/kubepods/besteffort/pod5f3c2a7e-9b1d-4c8e-a2f4-0b6d8e1c3a59/3b1f2c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b";
        let guaranteed = "0::/kubepods.slice/kubepods-pod5f3c2a7e_9b1d_4c8e_a2f4_0b6d8e1c3a59.slice/crio-3b1f2c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b.scope";
        for path in [systemd, cgroupfs, guaranteed] {
            assert_eq!(pod_uid_from_cgroup(path).as_deref(), Some(uid), "{path}");
        }
        assert_eq!(pod_uid_from_cgroup("0::/system.slice/docker-3b1f2c4d5e6f.scope"), None, "a container outside Kubernetes");
        assert_eq!(pod_uid_from_cgroup("0::/user.slice/user-0.slice/session-1.scope"), None);
        assert_eq!(pod_uid_from_cgroup("0::/kubepods/burstable/podnot-a-uid"), None);
    }

    #[test]
    fn paths_resolve_inside_the_container_root() {
        let root = std::env::temp_dir().join(format!("zerotrace-root-{}", std::process::id()));
        let secrets = root.join("run/secrets/kubernetes.io/serviceaccount");
        fs::create_dir_all(&secrets).expect("tree");
        fs::create_dir_all(root.join("var")).expect("var");
        fs::write(secrets.join("namespace"), "shop\n").expect("file");
        // As in Debian-based images: an absolute link, which must not leave the root.
        std::os::unix::fs::symlink("/run", root.join("var/run")).expect("link");
        let file = resolve_in_root(&root, "var/run/secrets/kubernetes.io/serviceaccount/namespace").expect("resolved");
        assert_eq!(file, secrets.join("namespace"));
        assert_eq!(fs::read_to_string(&file).expect("read"), "shop\n");
        // A relative link, and one that climbs above the root, stays inside it.
        std::os::unix::fs::symlink("../../../../run", root.join("var/up")).expect("link");
        assert_eq!(resolve_in_root(&root, "var/up/secrets").expect("resolved"), root.join("run/secrets"));
        // A loop gives up.
        std::os::unix::fs::symlink("loop", root.join("loop")).expect("link");
        assert_eq!(resolve_in_root(&root, "loop/x"), None);
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn outside_kubernetes_nothing_is_claimed() {
        let me = std::process::id();
        let identity = PodIdentity::of(me, "0::/user.slice/session-1.scope", Some("vm"));
        assert_eq!(identity, PodIdentity::default(), "a HOSTNAME outside a pod names no pod");
        assert!(identity.attributes().is_empty());
    }
}
