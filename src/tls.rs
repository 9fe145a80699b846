//! TLS set-up shared by the agent's HTTP clients (Elasticsearch, the Kubernetes API).

/// reqwest and kube are built without a default TLS crypto provider; logship uses ring's. Every
/// client calls this before it is built; the first call installs it, the others change nothing.
pub fn install_crypto_provider() {
    // Fails only if one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
