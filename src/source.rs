//! Where records come from: the identity of a followed file and what its kubelet name says.
//!
//! File identity is (device, inode) plus a fingerprint of the file's first bytes
//! (docs/ARCHITECTURE.md, the invariants): a renamed file keeps its identity, a new file that
//! reuses an old inode does not.
//!
//! The kubelet names container logs in two places, and both names carry the pod's coordinates, so
//! records say where they come from without any API access:
//!
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`, a symlink, and
//! - `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log`, its target.

use std::path::{Path, PathBuf};

/// The durable identity of a file, stored in the positions file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: Fingerprint,
}

/// CRC-32 of the first `len` bytes of a file. `len` grows (up to the fingerprint size) while a
/// young file grows, so a file shorter than the fingerprint size still has a stable identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint {
    pub len: u32,
    pub crc32: u32,
}

/// What a kubelet log file name tells about the container that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletName {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The runtime's container id (64 hex digits); only the `/var/log/containers` name has it.
    pub container_id: Option<String>,
    /// The pod's UID; only the `/var/log/pods` directory name has it.
    pub pod_uid: Option<String>,
}

/// A followed file as the rest of the pipeline sees it.
#[derive(Debug)]
pub struct Source {
    /// The path as discovered (for kubelet logs, the /var/log/containers symlink).
    pub path: PathBuf,
    /// Parsed from the file name; `None` for files that are not kubelet container logs.
    pub kubelet: Option<KubeletName>,
    /// The document fields that are the same for every record of this file, as its name tells
    /// them, rendered once as a JSON fragment (see `document`), so encoding a record never
    /// re-renders them. Batches carry their own copy, which enrichment may replace.
    pub fragment: std::sync::Arc<str>,
}

impl KubeletName {
    /// Parses either kubelet layout; `None` for any other path (plain VM logs). A name that only
    /// looks similar (wrong id length, an empty part) is not guessed at.
    pub fn from_path(path: &Path) -> Option<KubeletName> {
        let name = path.file_name()?.to_str()?;
        Self::from_containers_name(name).or_else(|| Self::from_pods_path(path))
    }

    /// `<pod>_<namespace>_<container>-<64 hex digits>.log`. Pod, namespace and container names
    /// are DNS labels or subdomains, which never contain `_`, so the split is unambiguous.
    fn from_containers_name(name: &str) -> Option<KubeletName> {
        let stem = name.strip_suffix(".log")?;
        let (rest, id) = stem.rsplit_once('-')?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut parts = rest.splitn(3, '_');
        let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
        if [pod, namespace, container].iter().any(|p| !is_dns_name(p)) {
            return None;
        }
        Some(KubeletName {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
            container_id: Some(id.to_owned()),
            pod_uid: None,
        })
    }

    /// `.../<namespace>_<pod>_<uid>/<container>/<n>.log` (rotated generations have a suffix after
    /// `.log` and are not followed under this name, so only `<n>.log` is accepted).
    fn from_pods_path(path: &Path) -> Option<KubeletName> {
        let file = path.file_name()?.to_str()?;
        let restarts = file.strip_suffix(".log")?;
        if restarts.is_empty() || !restarts.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let container_dir = path.parent()?;
        let container = container_dir.file_name()?.to_str()?;
        let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
        let mut parts = pod_dir.splitn(3, '_');
        let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
        if [namespace, pod, container].iter().any(|p| !is_dns_name(p)) || uid.is_empty() {
            return None;
        }
        Some(KubeletName {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
            container_id: None,
            pod_uid: Some(uid.to_owned()),
        })
    }
}

/// A Kubernetes object name: non-empty, lowercase alphanumerics, `-` and `.`.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b";

    #[test]
    fn kubelet_names() {
        let containers = format!("/var/log/containers/web-7d4b9-x2x9k_shop_nginx-{ID}.log");
        assert_eq!(
            KubeletName::from_path(Path::new(&containers)),
            Some(KubeletName {
                namespace: "shop".into(),
                pod: "web-7d4b9-x2x9k".into(),
                container: "nginx".into(),
                container_id: Some(ID.into()),
                pod_uid: None,
            })
        );
        let pods =
            "/var/log/pods/shop_web-7d4b9-x2x9k_6a1f0c3e-1111-2222-3333-444455556666/nginx/0.log";
        assert_eq!(
            KubeletName::from_path(Path::new(pods)),
            Some(KubeletName {
                namespace: "shop".into(),
                pod: "web-7d4b9-x2x9k".into(),
                container: "nginx".into(),
                container_id: None,
                pod_uid: Some("6a1f0c3e-1111-2222-3333-444455556666".into()),
            })
        );
        // A dotted pod name (StatefulSets of DNS subdomains) and a container with dashes.
        let dotted = format!("/x/db.primary-0_data_pg-exporter-{ID}.log");
        let k = KubeletName::from_path(Path::new(&dotted)).unwrap();
        assert_eq!(
            (k.pod.as_str(), k.container.as_str()),
            ("db.primary-0", "pg-exporter")
        );
    }

    #[test]
    fn other_names_are_not_guessed() {
        for p in [
            "/var/log/syslog",
            "/var/log/app.log",
            "/var/log/containers/web_shop_nginx-abc.log",
            &format!("/var/log/containers/_shop_nginx-{ID}.log"),
            &format!("/var/log/containers/Web_shop_nginx-{ID}.log"),
            &format!("/var/log/containers/web_shop_nginx-{ID}.log.20261122"),
            "/var/log/pods/shop_web_uid/nginx/0.log.20261122-100000",
            "/var/log/pods/shop_web/nginx/0.log",
        ] {
            assert_eq!(KubeletName::from_path(Path::new(p)), None, "{p}");
        }
    }
}
