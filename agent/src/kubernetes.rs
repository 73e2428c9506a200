//! A process's Kubernetes identity, read from the node alone (no API access): the pod's uid
//! from its cgroup path, the namespace from the pod's service-account file (through
//! /proc/PID/root), and the pod's name from the container's `HOSTNAME`, which the kubelet sets
//! to it.

use std::fs;

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
            let text = fs::read_to_string(format!("/proc/{pid}/root/var/run/secrets/kubernetes.io/serviceaccount/namespace")).ok()?;
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
    fn outside_kubernetes_nothing_is_claimed() {
        let me = std::process::id();
        let identity = PodIdentity::of(me, "0::/user.slice/session-1.scope", Some("vm"));
        assert_eq!(identity, PodIdentity::default(), "a HOSTNAME outside a pod names no pod");
        assert!(identity.attributes().is_empty());
    }
}
