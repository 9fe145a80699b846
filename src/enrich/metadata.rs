//! Pod and namespace metadata as logship keeps it: trimmed to what documents carry, and rendered
//! once per file into the JSON fragment every record of the file splices in.
//!
//! A Pod object from the API server is several kilobytes (managed fields, the whole spec, status
//! conditions); [`PodMeta`] keeps only names, uid, IP, labels, the allowed annotations, the owning
//! workload and each container's image and runtime, so hundreds of pods per node cost little.
//!
//! Label and annotation keys are de-dotted (`app.kubernetes.io/name` -> `app_kubernetes_io/name`)
//! unless the separator is configured empty, so that a label `app` and a label
//! `app.kubernetes.io/name` never make Elasticsearch map `app` both as a string and as an object.

use std::collections::BTreeMap;

use globset::GlobSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde_json::{json, Map, Value};

use crate::source::KubeletName;

/// Which field names documents use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// ECS-style names (the README's "The record"): `kubernetes.pod.name`, `container.id`, `message`.
    Ecs,
    /// The names fluent-plugin-kubernetes_metadata_filter writes: `kubernetes.pod_name`,
    /// `kubernetes.namespace_name`, `docker.container_id`, the message in `log`.
    Fluentd,
}

/// What to keep of labels and annotations.
#[derive(Clone, Debug)]
pub struct KeepOptions {
    pub labels: bool,
    pub namespace_labels: bool,
    /// Annotation keys to keep (globs); empty keeps none.
    pub annotations: GlobSet,
    /// Replaces `.` in label and annotation keys; `None` keeps the keys as they are.
    pub dedot: Option<String>,
}

/// The workload that owns a pod, resolved from its owner references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    Deployment(String),
    ReplicaSet(String),
    StatefulSet(String),
    DaemonSet(String),
    Job(String),
    CronJob(String),
}

impl Workload {
    fn field(&self) -> (&'static str, &str) {
        match self {
            Workload::Deployment(n) => ("deployment", n),
            Workload::ReplicaSet(n) => ("replicaset", n),
            Workload::StatefulSet(n) => ("statefulset", n),
            Workload::DaemonSet(n) => ("daemonset", n),
            Workload::Job(n) => ("job", n),
            Workload::CronJob(n) => ("cronjob", n),
        }
    }
}

/// One container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    pub image: Option<String>,
    /// `containerd`, `cri-o`, `docker`: the scheme of its container id.
    pub runtime: Option<String>,
}

/// A pod, trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub ip: Option<String>,
    pub node: Option<String>,
    /// De-dotted keys.
    pub labels: BTreeMap<String, String>,
    /// Allowed annotations only, de-dotted keys.
    pub annotations: BTreeMap<String, String>,
    /// Raw `logship.io/*` annotations (rate limits, parser hints), whatever the allow-list.
    pub hints: BTreeMap<String, String>,
    pub workload: Option<Workload>,
    pub containers: Vec<ContainerMeta>,
}

/// A namespace, trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceMeta {
    pub name: String,
    pub uid: Option<String>,
    /// De-dotted keys.
    pub labels: BTreeMap<String, String>,
}

fn dedot(key: &str, sep: Option<&str>) -> String {
    match sep {
        Some(sep) => key.replace('.', sep),
        None => key.to_owned(),
    }
}

/// An object's labels, dedotted, if they are kept at all.
fn kept_labels(
    keep: bool,
    labels: Option<&BTreeMap<String, String>>,
    sep: Option<&str>,
) -> BTreeMap<String, String> {
    match labels {
        Some(labels) if keep => labels
            .iter()
            .map(|(k, v)| (dedot(k, sep), v.clone()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

impl PodMeta {
    /// Trims a Pod from the API server.
    pub fn from_pod(pod: &Pod, keep: &KeepOptions) -> Option<PodMeta> {
        let meta = &pod.metadata;
        let sep = keep.dedot.as_deref();
        let labels = kept_labels(keep.labels, meta.labels.as_ref(), sep);
        let all_annotations = meta.annotations.iter().flatten();
        let annotations = all_annotations
            .clone()
            .filter(|(k, _)| keep.annotations.is_match(k.as_str()))
            .map(|(k, v)| (dedot(k, sep), v.clone()))
            .collect();
        let hints = all_annotations
            .filter(|(k, _)| k.starts_with("logship.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let runtime_of = |name: &str| {
            let statuses = status.into_iter().flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
                    .chain(s.ephemeral_container_statuses.iter().flatten())
            });
            statuses
                .filter(|c| c.name == name)
                .find_map(|c| c.container_id.as_deref())
                .and_then(|id| id.split_once("://"))
                .map(|(scheme, _)| scheme.to_owned())
        };
        let containers = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .map(|c| (c.name.as_str(), c.image.as_deref()))
                    .chain(
                        s.init_containers
                            .iter()
                            .flatten()
                            .map(|c| (c.name.as_str(), c.image.as_deref())),
                    )
                    .chain(
                        s.ephemeral_containers
                            .iter()
                            .flatten()
                            .map(|c| (c.name.as_str(), c.image.as_deref())),
                    )
            })
            .map(|(name, image)| ContainerMeta {
                name: name.to_owned(),
                image: image.map(str::to_owned),
                runtime: runtime_of(name),
            })
            .collect();
        Some(PodMeta {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone(),
            ip: status.and_then(|s| s.pod_ip.clone()),
            node: spec.and_then(|s| s.node_name.clone()),
            labels,
            annotations,
            hints,
            workload: workload(pod),
            containers,
        })
    }

    pub fn container(&self, name: &str) -> Option<&ContainerMeta> {
        self.containers.iter().find(|c| c.name == name)
    }
}

impl NamespaceMeta {
    pub fn from_namespace(ns: &Namespace, keep: &KeepOptions) -> Option<NamespaceMeta> {
        let sep = keep.dedot.as_deref();
        Some(NamespaceMeta {
            name: ns.metadata.name.clone()?,
            uid: ns.metadata.uid.clone(),
            labels: kept_labels(keep.namespace_labels, ns.metadata.labels.as_ref(), sep),
        })
    }
}

/// The owning workload, from the controller owner reference and the naming conventions of the
/// controllers, without watching ReplicaSets or Jobs: a ReplicaSet named
/// `<deployment>-<pod-template-hash>` (the hash is the pod's `pod-template-hash` label) belongs to
/// a Deployment; a Job named `<cronjob>-<minutes since the epoch>` to a CronJob.
pub fn workload(pod: &Pod) -> Option<Workload> {
    let owners = pod.metadata.owner_references.as_ref()?;
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())?;
    let name = owner.name.clone();
    Some(match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| name.strip_suffix(h.as_str())?.strip_suffix('-')) {
                Some(deployment) if !deployment.is_empty() => {
                    Workload::Deployment(deployment.to_owned())
                }
                _ => Workload::ReplicaSet(name),
            }
        }
        "StatefulSet" => Workload::StatefulSet(name),
        "DaemonSet" => Workload::DaemonSet(name),
        "Job" => match name.rsplit_once('-') {
            Some((cronjob, minutes))
                if !cronjob.is_empty()
                    && minutes.len() >= 8
                    && minutes.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Workload::CronJob(cronjob.to_owned())
            }
            _ => Workload::Job(name),
        },
        _ => return None,
    })
}

/// The per-file part of every document that follows `"log":{"offset":N,` (ECS) or the message
/// (fluentd): the file path, then the Kubernetes and container fields. Everything after it (the
/// host) is the encoder's.
pub fn render(
    schema: Schema,
    path: &str,
    kubelet: Option<&KubeletName>,
    pod: Option<&PodMeta>,
    namespace: Option<&NamespaceMeta>,
) -> String {
    let mut out = String::with_capacity(512);
    let subject = kubelet.map(|kubelet| Subject {
        kubelet,
        pod,
        namespace,
    });
    match schema {
        Schema::Ecs => {
            out.push_str("\"file\":");
            out.push_str(&json!({ "path": path }).to_string());
            out.push_str("},");
            if let Some(subject) = subject {
                out.push_str("\"kubernetes\":");
                out.push_str(&Value::Object(ecs_kubernetes(subject)).to_string());
                out.push(',');
                let container = ecs_container(subject.kubelet, pod);
                if !container.is_empty() {
                    out.push_str("\"container\":");
                    out.push_str(&Value::Object(container).to_string());
                    out.push(',');
                }
            }
        }
        Schema::Fluentd => {
            if let Some(subject) = subject {
                out.push_str("\"kubernetes\":");
                out.push_str(&Value::Object(fluentd_kubernetes(subject)).to_string());
                out.push(',');
                if let Some(id) = &subject.kubelet.container_id {
                    out.push_str("\"docker\":");
                    out.push_str(&json!({ "container_id": id }).to_string());
                    out.push(',');
                }
            }
            out.push_str("\"file\":");
            out.push_str(&json!(path).to_string());
            out.push(',');
        }
    }
    out
}

/// Whose metadata a fragment renders: the file name's, and the pod's and namespace's when known.
#[derive(Clone, Copy)]
struct Subject<'a> {
    kubelet: &'a KubeletName,
    pod: Option<&'a PodMeta>,
    namespace: Option<&'a NamespaceMeta>,
}

fn map(pairs: &BTreeMap<String, String>) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

fn ecs_kubernetes(subject: Subject<'_>) -> Map<String, Value> {
    let (k, pod, namespace) = (subject.kubelet, subject.pod, subject.namespace);
    let mut m = Map::new();
    m.insert("namespace".into(), k.namespace.as_str().into());
    if let Some(ns) = namespace.filter(|ns| !ns.labels.is_empty()) {
        m.insert("namespace_labels".into(), map(&ns.labels));
    }
    let mut p = Map::new();
    p.insert("name".into(), k.pod.as_str().into());
    let uid = pod.and_then(|p| p.uid.as_deref()).or(k.pod_uid.as_deref());
    if let Some(uid) = uid {
        p.insert("uid".into(), uid.into());
    }
    if let Some(ip) = pod.and_then(|p| p.ip.as_deref()) {
        p.insert("ip".into(), ip.into());
    }
    m.insert("pod".into(), Value::Object(p));
    m.insert("container".into(), json!({ "name": k.container }));
    if let Some(pod) = pod {
        if let Some(node) = &pod.node {
            m.insert("node".into(), json!({ "name": node }));
        }
        if !pod.labels.is_empty() {
            m.insert("labels".into(), map(&pod.labels));
        }
        if !pod.annotations.is_empty() {
            m.insert("annotations".into(), map(&pod.annotations));
        }
        if let Some(w) = &pod.workload {
            let (field, name) = w.field();
            m.insert(field.into(), json!({ "name": name }));
        }
    }
    m
}

fn ecs_container(k: &KubeletName, pod: Option<&PodMeta>) -> Map<String, Value> {
    let mut c = Map::new();
    if let Some(id) = &k.container_id {
        c.insert("id".into(), id.as_str().into());
    }
    if let Some(meta) = pod.and_then(|p| p.container(&k.container)) {
        if let Some(image) = &meta.image {
            c.insert("image".into(), json!({ "name": image }));
        }
        if let Some(runtime) = &meta.runtime {
            c.insert("runtime".into(), runtime.as_str().into());
        }
    }
    c
}

fn fluentd_kubernetes(subject: Subject<'_>) -> Map<String, Value> {
    let (k, pod, namespace) = (subject.kubelet, subject.pod, subject.namespace);
    let mut m = Map::new();
    m.insert("container_name".into(), k.container.as_str().into());
    m.insert("namespace_name".into(), k.namespace.as_str().into());
    m.insert("pod_name".into(), k.pod.as_str().into());
    let uid = pod.and_then(|p| p.uid.as_deref()).or(k.pod_uid.as_deref());
    if let Some(uid) = uid {
        m.insert("pod_id".into(), uid.into());
    }
    if let Some(pod) = pod {
        if let Some(image) = pod.container(&k.container).and_then(|c| c.image.as_deref()) {
            m.insert("container_image".into(), image.into());
        }
        if let Some(ip) = &pod.ip {
            m.insert("pod_ip".into(), ip.as_str().into());
        }
        if let Some(node) = &pod.node {
            m.insert("host".into(), node.as_str().into());
        }
        if !pod.labels.is_empty() {
            m.insert("labels".into(), map(&pod.labels));
        }
        if !pod.annotations.is_empty() {
            m.insert("annotations".into(), map(&pod.annotations));
        }
    }
    if let Some(ns) = namespace {
        if let Some(uid) = &ns.uid {
            m.insert("namespace_id".into(), uid.as_str().into());
        }
        if !ns.labels.is_empty() {
            m.insert("namespace_labels".into(), map(&ns.labels));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_json() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-7d4b9-x2x9k",
                "namespace": "shop",
                "uid": "6a1f0c3e-1111-2222-3333-444455556666",
                "labels": {
                    "app": "web",
                    "app.kubernetes.io/name": "web",
                    "pod-template-hash": "7d4b9"
                },
                "annotations": {
                    "kubectl.kubernetes.io/restartedAt": "2026-11-22T10:00:00Z",
                    "team.example.com/owner": "payments",
                    "logship.io/parser": "json"
                },
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9",
                    "uid": "0000", "controller": true, "blockOwnerDeletion": true
                }],
                "managedFields": [{ "manager": "kube-controller-manager", "operation": "Update" }]
            },
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    { "name": "nginx", "image": "nginx:1.27" },
                    { "name": "sidecar", "image": "envoy:1.31" }
                ],
                "initContainers": [{ "name": "init", "image": "busybox:1.36" }]
            },
            "status": {
                "phase": "Running",
                "podIP": "10.1.2.3",
                "containerStatuses": [{
                    "name": "nginx", "image": "docker.io/library/nginx:1.27", "imageID": "x",
                    "containerID": "containerd://3f2a", "ready": true, "restartCount": 0
                }]
            }
        })
    }

    fn keep(annotations: &[&str], dedot: Option<&str>) -> KeepOptions {
        let mut set = globset::GlobSetBuilder::new();
        for a in annotations {
            set.add(globset::Glob::new(a).unwrap());
        }
        KeepOptions {
            labels: true,
            namespace_labels: true,
            annotations: set.build().unwrap(),
            dedot: dedot.map(str::to_owned),
        }
    }

    fn kubelet() -> KubeletName {
        KubeletName {
            namespace: "shop".into(),
            pod: "web-7d4b9-x2x9k".into(),
            container: "nginx".into(),
            container_id: Some("3f2a".into()),
            pod_uid: None,
        }
    }

    #[test]
    fn pods_are_trimmed_and_dedotted() {
        let pod: Pod = serde_json::from_value(pod_json()).unwrap();
        let meta = PodMeta::from_pod(&pod, &keep(&["team.example.com/*"], Some("_"))).unwrap();
        assert_eq!(meta.labels["app_kubernetes_io/name"], "web");
        assert!(meta.labels.contains_key("app"));
        assert_eq!(
            meta.annotations.keys().collect::<Vec<_>>(),
            ["team_example_com/owner"]
        );
        assert_eq!(meta.hints["logship.io/parser"], "json");
        assert_eq!(meta.workload, Some(Workload::Deployment("web".into())));
        assert_eq!(meta.ip.as_deref(), Some("10.1.2.3"));
        let nginx = meta.container("nginx").unwrap();
        assert_eq!(nginx.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(nginx.runtime.as_deref(), Some("containerd"));
        assert_eq!(
            meta.container("init").unwrap().image.as_deref(),
            Some("busybox:1.36")
        );
        let kept = PodMeta::from_pod(&pod, &keep(&[], None)).unwrap();
        assert!(
            kept.labels.contains_key("app.kubernetes.io/name"),
            "dedot off"
        );
        assert!(kept.annotations.is_empty(), "annotations are opt-in");
    }

    #[test]
    fn owners_by_convention() {
        let with_owner = |kind: &str, name: &str, hash: Option<&str>| {
            let mut v = pod_json();
            v["metadata"]["ownerReferences"][0]["kind"] = kind.into();
            v["metadata"]["ownerReferences"][0]["name"] = name.into();
            match hash {
                Some(h) => v["metadata"]["labels"]["pod-template-hash"] = h.into(),
                None => {
                    v["metadata"]["labels"]
                        .as_object_mut()
                        .unwrap()
                        .remove("pod-template-hash");
                }
            }
            workload(&serde_json::from_value(v).unwrap())
        };
        let table = [
            (
                ("ReplicaSet", "api-server-5f6d8", Some("5f6d8")),
                Some(Workload::Deployment("api-server".into())),
            ),
            (
                ("ReplicaSet", "lonely-rs", None),
                Some(Workload::ReplicaSet("lonely-rs".into())),
            ),
            (
                ("StatefulSet", "db", None),
                Some(Workload::StatefulSet("db".into())),
            ),
            (
                ("DaemonSet", "logship", None),
                Some(Workload::DaemonSet("logship".into())),
            ),
            (
                ("Job", "backup-29384756", None),
                Some(Workload::CronJob("backup".into())),
            ),
            (
                ("Job", "migrate", None),
                Some(Workload::Job("migrate".into())),
            ),
            (("Node", "node-1", None), None),
        ];
        for ((kind, name, hash), want) in table {
            assert_eq!(with_owner(kind, name, hash), want, "{kind} {name}");
        }
    }

    #[test]
    fn ecs_fragment() {
        let pod: Pod = serde_json::from_value(pod_json()).unwrap();
        let meta = PodMeta::from_pod(&pod, &keep(&[], Some("_"))).unwrap();
        let ns = NamespaceMeta {
            name: "shop".into(),
            uid: Some("ns-uid".into()),
            labels: [("team".to_string(), "payments".to_string())].into(),
        };
        let fragment = render(
            Schema::Ecs,
            "/var/log/containers/x.log",
            Some(&kubelet()),
            Some(&meta),
            Some(&ns),
        );
        let doc: Value = serde_json::from_str(&format!(
            "{{\"log\":{{\"offset\":1,{fragment}\"host\":{{}}}}"
        ))
        .unwrap();
        assert_eq!(doc["log"]["file"]["path"], "/var/log/containers/x.log");
        let k = &doc["kubernetes"];
        assert_eq!(k["namespace"], "shop");
        assert_eq!(k["namespace_labels"]["team"], "payments");
        assert_eq!(
            k["pod"],
            json!({ "name": "web-7d4b9-x2x9k", "uid": "6a1f0c3e-1111-2222-3333-444455556666", "ip": "10.1.2.3" })
        );
        assert_eq!(k["node"]["name"], "node-1");
        assert_eq!(k["labels"]["app_kubernetes_io/name"], "web");
        assert_eq!(k["deployment"]["name"], "web");
        assert_eq!(
            doc["container"],
            json!({ "id": "3f2a", "image": { "name": "nginx:1.27" }, "runtime": "containerd" })
        );
        // Without metadata: what the file name tells.
        let bare = render(Schema::Ecs, "/p", Some(&kubelet()), None, None);
        let doc: Value =
            serde_json::from_str(&format!("{{\"log\":{{\"offset\":1,{bare}\"host\":{{}}}}"))
                .unwrap();
        assert_eq!(
            doc["kubernetes"],
            json!({ "namespace": "shop", "pod": { "name": "web-7d4b9-x2x9k" }, "container": { "name": "nginx" } })
        );
        assert_eq!(doc["container"], json!({ "id": "3f2a" }));
    }

    #[test]
    fn fluentd_fragment() {
        let pod: Pod = serde_json::from_value(pod_json()).unwrap();
        let meta = PodMeta::from_pod(&pod, &keep(&[], Some("_"))).unwrap();
        let fragment = render(Schema::Fluentd, "/p", Some(&kubelet()), Some(&meta), None);
        let doc: Value = serde_json::from_str(&format!("{{{fragment}\"x\":1}}")).unwrap();
        assert_eq!(doc["kubernetes"]["pod_name"], "web-7d4b9-x2x9k");
        assert_eq!(doc["kubernetes"]["namespace_name"], "shop");
        assert_eq!(doc["kubernetes"]["container_name"], "nginx");
        assert_eq!(doc["kubernetes"]["container_image"], "nginx:1.27");
        assert_eq!(doc["kubernetes"]["host"], "node-1");
        assert_eq!(doc["docker"]["container_id"], "3f2a");
    }
}
