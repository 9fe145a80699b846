//! Real-shaped Pod and Namespace objects, as `kubectl get -o json` shows them on a cluster whose
//! workloads are run by the usual controllers: what a log agent's enrichment reads (labels with
//! dotted keys, annotations, ownerReferences, container IDs and images, IPs, node name) and what
//! it must cope with or trim (managedFields, a full spec and status).
//!
//! Identifiers are derived from the names (UIDs, container IDs, image digests), so a test can
//! compute the container ID a log file name carries with [`container_id`] and get the same pod
//! twice. Set a UID explicitly to model a pod deleted and recreated under the same name.

use std::collections::BTreeMap;
use std::hash::Hasher;

use serde_json::{json, Map, Value};
use siphasher::sip::SipHasher13;

fn hash(parts: &[&str], salt: u64) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x6b75_6265_7465_7374, salt);
    for p in parts {
        h.write(p.as_bytes());
        h.write_u8(0);
    }
    h.finish()
}

fn hex(parts: &[&str], words: u64) -> String {
    (0..words)
        .map(|i| format!("{:016x}", hash(parts, i)))
        .collect()
}

/// A UUID (v4 layout) derived from `parts`.
pub fn uid_for(parts: &[&str]) -> String {
    let h = hex(parts, 2);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The 64-hex container ID the runtime gives `container` of `namespace/pod` in these fixtures
/// (without the `containerd://` prefix), as it appears in `/var/log/containers/` file names.
/// The kubelet's file name of a container.
pub fn file_name(namespace: &str, pod: &str, container: &str) -> String {
    format!(
        "{pod}_{namespace}_{container}-{}.log",
        container_id(namespace, pod, container)
    )
}

pub fn container_id(namespace: &str, pod: &str, container: &str) -> String {
    hex(&["container", namespace, pod, container], 4)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The controller that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    ReplicaSet(String),
    StatefulSet(String),
    DaemonSet(String),
    Job(String),
}

impl Owner {
    fn parts(&self) -> (&'static str, &'static str, &str) {
        match self {
            Owner::ReplicaSet(n) => ("apps/v1", "ReplicaSet", n),
            Owner::StatefulSet(n) => ("apps/v1", "StatefulSet", n),
            Owner::DaemonSet(n) => ("apps/v1", "DaemonSet", n),
            Owner::Job(n) => ("batch/v1", "Job", n),
        }
    }
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    image: String,
    id: Option<String>,
}

/// Builds a Pod. Start with [`pod`].
#[derive(Debug, Clone)]
pub struct PodBuilder {
    namespace: String,
    name: String,
    node: Option<String>,
    uid: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner: Option<Owner>,
    containers: Vec<Container>,
    init_containers: Vec<Container>,
    ip: Option<String>,
    phase: String,
    service_account: String,
    host_network: bool,
}

/// A running pod of `namespace` on `node`, with the labels every workload has (`app`,
/// `app.kubernetes.io/name`, `app.kubernetes.io/instance`) and one container named after the
/// app (the name up to its first `-`). An empty `node` gives a pending, unscheduled pod.
pub fn pod(namespace: &str, name: &str, node: &str) -> PodBuilder {
    let app = name.split('-').next().unwrap_or(name).to_string();
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), app.clone());
    labels.insert("app.kubernetes.io/name".to_string(), app.clone());
    labels.insert("app.kubernetes.io/instance".to_string(), app.clone());
    let h = hash(&[namespace, name], 7);
    PodBuilder {
        namespace: namespace.into(),
        name: name.into(),
        node: (!node.is_empty()).then(|| node.to_string()),
        uid: None,
        labels,
        annotations: BTreeMap::new(),
        owner: None,
        containers: vec![Container {
            name: app.clone(),
            image: format!("registry.example.com/{app}:1.4.2"),
            id: None,
        }],
        init_containers: Vec::new(),
        ip: Some(format!("10.244.{}.{}", (h >> 8) % 250 + 1, h % 250 + 2)),
        phase: "Running".into(),
        service_account: "default".into(),
        host_network: false,
    }
}

impl PodBuilder {
    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.into());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn without_label(mut self, key: &str) -> Self {
        self.labels.remove(key);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Owned by this ReplicaSet (of a Deployment): adds `pod-template-hash`.
    pub fn replica_set(mut self, name: &str) -> Self {
        self.owner = Some(Owner::ReplicaSet(name.into()));
        self
    }

    /// Owned by this StatefulSet: adds `controller-revision-hash`, `statefulset.kubernetes.io/pod-name`
    /// and `apps.kubernetes.io/pod-index`.
    pub fn stateful_set(mut self, name: &str) -> Self {
        self.owner = Some(Owner::StatefulSet(name.into()));
        self
    }

    /// Owned by this DaemonSet: adds `controller-revision-hash` and `pod-template-generation`.
    pub fn daemon_set(mut self, name: &str) -> Self {
        self.owner = Some(Owner::DaemonSet(name.into()));
        self
    }

    /// Owned by this Job (a CronJob's Jobs are named `<cronjob>-<minutes since epoch>`): adds the
    /// `batch.kubernetes.io/*` labels and the legacy `job-name` and `controller-uid`.
    pub fn job(mut self, name: &str) -> Self {
        self.owner = Some(Owner::Job(name.into()));
        self
    }

    /// Replaces the containers with these `(name, image)` pairs.
    pub fn containers(mut self, containers: &[(&str, &str)]) -> Self {
        self.containers = containers
            .iter()
            .map(|(n, i)| Container {
                name: (*n).into(),
                image: (*i).into(),
                id: None,
            })
            .collect();
        self
    }

    /// Adds a container.
    pub fn container(mut self, name: &str, image: &str) -> Self {
        self.containers.push(Container {
            name: name.into(),
            image: image.into(),
            id: None,
        });
        self
    }

    /// Adds a container with this 64-hex runtime ID.
    pub fn container_with_id(mut self, name: &str, image: &str, id: &str) -> Self {
        self.containers.push(Container {
            name: name.into(),
            image: image.into(),
            id: Some(id.into()),
        });
        self
    }

    /// Adds an init container (terminated, as after a successful start).
    pub fn init_container(mut self, name: &str, image: &str) -> Self {
        self.init_containers.push(Container {
            name: name.into(),
            image: image.into(),
            id: None,
        });
        self
    }

    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.into());
        self
    }

    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub fn phase(mut self, phase: &str) -> Self {
        self.phase = phase.into();
        self
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.service_account = name.into();
        self
    }

    /// On the node's network: the pod IP is the node's.
    pub fn host_network(mut self) -> Self {
        self.host_network = true;
        self
    }

    pub fn build(self) -> Value {
        let ns = self.namespace.as_str();
        let name = self.name.as_str();
        let uid = self
            .uid
            .clone()
            .unwrap_or_else(|| uid_for(&["pod", ns, name]));
        let created = now();
        let mut labels = self.labels.clone();
        let mut generate_name = None;
        let mut owner_refs = Vec::new();
        if let Some(owner) = &self.owner {
            let (api_version, kind, owner_name) = owner.parts();
            let owner_uid = uid_for(&[kind, ns, owner_name]);
            let revision = &hex(&[kind, ns, owner_name, "revision"], 1)[..10];
            match owner {
                Owner::ReplicaSet(rs) => {
                    let hash = rs.rsplit('-').next().unwrap_or(rs);
                    labels.insert("pod-template-hash".into(), hash.into());
                    generate_name = Some(format!("{rs}-"));
                }
                Owner::StatefulSet(sts) => {
                    labels.insert(
                        "controller-revision-hash".into(),
                        format!("{sts}-{revision}"),
                    );
                    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.into());
                    let index = name.rsplit('-').next().unwrap_or("0");
                    labels.insert("apps.kubernetes.io/pod-index".into(), index.into());
                    generate_name = Some(format!("{sts}-"));
                }
                Owner::DaemonSet(ds) => {
                    labels.insert("controller-revision-hash".into(), revision.into());
                    labels.insert("pod-template-generation".into(), "1".into());
                    generate_name = Some(format!("{ds}-"));
                }
                Owner::Job(job) => {
                    labels.insert(
                        "batch.kubernetes.io/controller-uid".into(),
                        owner_uid.clone(),
                    );
                    labels.insert("batch.kubernetes.io/job-name".into(), job.clone());
                    labels.insert("controller-uid".into(), owner_uid.clone());
                    labels.insert("job-name".into(), job.clone());
                    generate_name = Some(format!("{job}-"));
                }
            }
            owner_refs.push(json!({
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": owner_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }));
        }
        let volume = format!("kube-api-access-{}", &hex(&["vol", ns, name], 1)[..5]);
        let container_spec = |c: &Container| {
            json!({
                "name": c.name,
                "image": c.image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [{
                    "name": volume,
                    "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
                }]
            })
        };
        let mut spec = json!({
            "containers": self.containers.iter().map(container_spec).collect::<Vec<_>>(),
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": if matches!(self.owner, Some(Owner::Job(_))) { "Never" } else { "Always" },
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": self.service_account,
            "serviceAccountName": self.service_account,
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}
            ],
            "volumes": [{
                "name": volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                    ]
                }
            }]
        });
        if !self.init_containers.is_empty() {
            spec["initContainers"] = json!(self
                .init_containers
                .iter()
                .map(container_spec)
                .collect::<Vec<_>>());
        }
        if self.host_network {
            spec["hostNetwork"] = json!(true);
        }
        let mut status = json!({"phase": self.phase, "qosClass": "BestEffort"});
        let node_ip = self.node.as_deref().map(|n| {
            format!(
                "192.168.{}.{}",
                hash(&[n], 3) % 200 + 10,
                hash(&[n], 4) % 250 + 2
            )
        });
        match &self.node {
            Some(node) => {
                spec["nodeName"] = json!(node);
                let node_ip = node_ip.clone().unwrap_or_default();
                let pod_ip = if self.host_network {
                    Some(node_ip.clone())
                } else {
                    self.ip.clone()
                };
                let running = self.phase == "Running";
                let ready = if running { "True" } else { "False" };
                status["conditions"] = json!([
                    {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": created},
                    {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": created},
                    {"type": "Ready", "status": ready, "lastProbeTime": null, "lastTransitionTime": created},
                    {"type": "ContainersReady", "status": ready, "lastProbeTime": null, "lastTransitionTime": created},
                    {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": created}
                ]);
                status["hostIP"] = json!(node_ip);
                status["hostIPs"] = json!([{"ip": node_ip}]);
                if let Some(ip) = &pod_ip {
                    status["podIP"] = json!(ip);
                    status["podIPs"] = json!([{"ip": ip}]);
                }
                status["startTime"] = json!(created);
                let container_status = |c: &Container, init: bool| {
                    let id =
                        c.id.clone()
                            .unwrap_or_else(|| container_id(ns, name, &c.name));
                    let full_image = normalise_image(&c.image);
                    let repo = full_image
                        .rsplit_once(':')
                        .map_or(full_image.as_str(), |(r, _)| r);
                    let digest = hex(&["image", &c.image], 4);
                    let state = if init {
                        json!({"terminated": {"containerID": format!("containerd://{id}"), "exitCode": 0, "finishedAt": created, "reason": "Completed", "startedAt": created}})
                    } else if running {
                        json!({"running": {"startedAt": created}})
                    } else {
                        json!({"waiting": {"reason": "ContainerCreating"}})
                    };
                    json!({
                        "containerID": format!("containerd://{id}"),
                        "image": full_image,
                        "imageID": format!("{repo}@sha256:{digest}"),
                        "lastState": {},
                        "name": c.name,
                        "ready": running && !init,
                        "restartCount": 0,
                        "started": running && !init,
                        "state": state,
                        "volumeMounts": [{
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "name": volume,
                            "readOnly": true,
                            "recursiveReadOnly": "Disabled"
                        }]
                    })
                };
                status["containerStatuses"] = json!(self
                    .containers
                    .iter()
                    .map(|c| container_status(c, false))
                    .collect::<Vec<_>>());
                if !self.init_containers.is_empty() {
                    status["initContainerStatuses"] = json!(self
                        .init_containers
                        .iter()
                        .map(|c| container_status(c, true))
                        .collect::<Vec<_>>());
                }
            }
            None => {
                status["phase"] = json!("Pending");
                status["conditions"] = json!([{
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": null,
                    "lastTransitionTime": created,
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
                }]);
            }
        }
        let mut metadata = json!({
            "creationTimestamp": created,
            "labels": labels,
            "name": name,
            "namespace": ns,
            "uid": uid,
        });
        if let Some(g) = &generate_name {
            metadata["generateName"] = json!(g);
        }
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        if !owner_refs.is_empty() {
            metadata["ownerReferences"] = json!(owner_refs);
        }
        let manager = if self.owner.is_some() {
            "kube-controller-manager"
        } else {
            "kubectl-create"
        };
        let mut spec_fields = Map::new();
        spec_fields.insert(
            "f:containers".into(),
            json!(self
                .containers
                .iter()
                .map(|c| (format!("k:{{\"name\":\"{}\"}}", c.name), json!({".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}})))
                .collect::<Map<String, Value>>()),
        );
        for f in [
            "dnsPolicy",
            "enableServiceLinks",
            "restartPolicy",
            "schedulerName",
            "securityContext",
            "terminationGracePeriodSeconds",
        ] {
            spec_fields.insert(format!("f:{f}"), json!({}));
        }
        let mut meta_fields = Map::new();
        meta_fields.insert("f:labels".into(), fields_of(labels.keys()));
        if !self.annotations.is_empty() {
            meta_fields.insert("f:annotations".into(), fields_of(self.annotations.keys()));
        }
        if generate_name.is_some() {
            meta_fields.insert("f:generateName".into(), json!({}));
        }
        if let Some(r) = owner_refs.first() {
            meta_fields.insert(
                "f:ownerReferences".into(),
                json!({".": {}, format!("k:{{\"uid\":\"{}\"}}", r["uid"].as_str().unwrap_or("")): {}}),
            );
        }
        let mut managed = vec![json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": "v1",
            "time": created,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": meta_fields, "f:spec": spec_fields}
        })];
        if self.node.is_some() {
            let mut status_fields = json!({
                "f:conditions": {
                    "k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Initialized\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"PodReadyToStartContainers\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}
                },
                "f:containerStatuses": {},
                "f:hostIP": {},
                "f:hostIPs": {},
                "f:phase": {},
                "f:startTime": {}
            });
            if let Some(ip) = status["podIP"].as_str() {
                status_fields["f:podIP"] = json!({});
                status_fields["f:podIPs"] =
                    json!({".": {}, format!("k:{{\"ip\":\"{ip}\"}}"): {".": {}, "f:ip": {}}});
            }
            managed.push(json!({
                "manager": "kubelet",
                "operation": "Update",
                "apiVersion": "v1",
                "time": created,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": status_fields},
                "subresource": "status"
            }));
        }
        metadata["managedFields"] = json!(managed);
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": spec,
            "status": status,
        })
    }
}

fn fields_of<'a>(keys: impl Iterator<Item = &'a String>) -> Value {
    let mut m = Map::new();
    m.insert(".".into(), json!({}));
    for k in keys {
        m.insert(format!("f:{k}"), json!({}));
    }
    Value::Object(m)
}

/// The image reference as containerd reports it: `nginx:1.27` is `docker.io/library/nginx:1.27`.
fn normalise_image(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    let has_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let with_repo = if has_registry {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    };
    let last = with_repo.rsplit('/').next().unwrap_or("");
    if last.contains(':') || last.contains('@') {
        with_repo
    } else {
        format!("{with_repo}:latest")
    }
}

/// Builds a Namespace. Start with [`namespace`].
#[derive(Debug, Clone)]
pub struct NamespaceBuilder {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// A namespace with the `kubernetes.io/metadata.name` label the apiserver sets on every
/// namespace.
pub fn namespace(name: &str) -> NamespaceBuilder {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/metadata.name".to_string(), name.to_string());
    NamespaceBuilder {
        name: name.into(),
        labels,
        annotations: BTreeMap::new(),
    }
}

impl NamespaceBuilder {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn build(self) -> Value {
        let created = now();
        let mut metadata = json!({
            "creationTimestamp": created,
            "labels": self.labels,
            "name": self.name,
            "uid": uid_for(&["namespace", &self.name]),
            "managedFields": [{
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "v1",
                "time": created,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": fields_of(self.labels.keys())}}
            }]
        });
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        })
    }
}
