//! TLS and mutual TLS with certificates made at test time, driven through the real CLI.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::harness::*;

/// PEM files of a test PKI in a temp dir: a CA, a server certificate for 127.0.0.1 and localhost, a
/// client certificate it signed, and a client certificate of an unrelated CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let (trusted, stranger) = (ca("apikeys test CA"), ca("unknown CA"));
        write("ca.pem", trusted.pem());
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, issuer: &CertifiedIssuer<'_, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
        };
        let (cert, key) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth, &trusted);
        write("server.pem", cert);
        write("server-key.pem", key);
        let (cert, key) = leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth, &trusted);
        write("client.pem", cert);
        write("client-key.pem", key);
        let (cert, key) = leaf(vec!["intruder".into()], ExtendedKeyUsagePurpose::ClientAuth, &stranger);
        write("stranger.pem", cert);
        write("stranger-key.pem", key);
        Self { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn serve(&self, config: &mut apikeys::config::ServerConfig, mutual: bool) {
        config.tls_cert = Some(self.path("server.pem").into());
        config.tls_key = Some(self.path("server-key.pem").into());
        if mutual {
            config.tls_client_ca = Some(self.path("ca.pem").into());
        }
    }
}

#[tokio::test]
async fn the_cli_talks_tls_and_plaintext_is_refused() {
    let pki = Pki::new();
    let app = TestApp::spawn_with(|c| pki.serve(c, false)).await;
    let https = format!("https://{}", app.addr);
    let ca = pki.path("ca.pem");
    let health = apikeys(&["health", "--server", &https, "--ca-cert", &ca]).await.ok();
    assert_eq!(health.stdout.trim(), "SERVING");
    let token_file = app.admin_token_file();
    let created = apikeys(&[
        "key",
        "create",
        "--name",
        "Over TLS",
        "--server",
        &https,
        "--ca-cert",
        &ca,
        "--token-file",
        &token_file,
        "-o",
        "json",
    ])
    .await
    .ok()
    .json();
    assert_eq!(created["api_key"]["display_name"], "Over TLS");

    // A TLS flag with an http:// URL would have sent the token in clear text: refused before any
    // connection, as is a token over plain HTTP to another host without --insecure-plaintext.
    let http = app.url().replace("127.0.0.1", "localhost");
    let tls_flag_on_http = ["key", "list", "--server", &http, "--ca-cert", &ca, "--token-file", &token_file];
    apikeys(&tls_flag_on_http).await.fails_with("need TLS");
    let to_elsewhere = ["key", "list", "--server", "http://apikeys.invalid:50051", "--token-file", &token_file];
    apikeys(&to_elsewhere).await.fails_with("refusing to send credentials in clear text");

    // Plaintext to the TLS port fails, promptly and with a message.
    let started = std::time::Instant::now();
    let plain = apikeys(&["health", "--server", &app.url(), "--timeout-secs", "5"]).await;
    assert!(!plain.success, "plaintext must not work: {}", plain.stdout);
    assert!(plain.stderr.contains("transport error"), "{}", plain.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // And a TLS client that does not trust the server's CA is refused too.
    apikeys(&["health", "--server", &https, "--ca-cert", &pki.path("stranger.pem"), "--timeout-secs", "5"])
        .await
        .fails_with("cannot connect");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let pki = Pki::new();
    let app = TestApp::spawn_with(|c| pki.serve(c, true)).await;
    let https = format!("https://{}", app.addr);
    let ca = pki.path("ca.pem");
    let ok = apikeys(&[
        "health",
        "--server",
        &https,
        "--ca-cert",
        &ca,
        "--client-cert",
        &pki.path("client.pem"),
        "--client-key",
        &pki.path("client-key.pem"),
    ])
    .await
    .ok();
    assert_eq!(ok.stdout.trim(), "SERVING");

    let stranger = apikeys(&[
        "health",
        "--server",
        &https,
        "--ca-cert",
        &ca,
        "--client-cert",
        &pki.path("stranger.pem"),
        "--client-key",
        &pki.path("stranger-key.pem"),
        "--timeout-secs",
        "5",
    ])
    .await;
    assert!(!stranger.success, "an unknown client certificate is refused: {}", stranger.stdout);
    let anonymous = apikeys(&["health", "--server", &https, "--ca-cert", &ca, "--timeout-secs", "5"]).await;
    assert!(!anonymous.success, "a client without a certificate is refused: {}", anonymous.stdout);
}

#[tokio::test]
async fn a_bad_certificate_stops_the_server_at_startup() {
    let pki = Pki::new();
    let db = TestDb::new().await;
    let mut config = db.config();
    config.tls_cert = Some(pki.path("server.pem").into());
    config.tls_key = Some(pki.path("missing-key.pem").into());
    let error = apikeys::server::Application::build(config).await.unwrap_err().to_string();
    assert!(error.contains("missing-key.pem"), "{error}");
}

/// The interceptor's remote authenticator over mutual TLS: a consumer with a trusted client
/// certificate authenticates; one without a certificate, or with an unknown CA's, fails closed.
#[tokio::test]
async fn the_remote_authenticator_speaks_mutual_tls() {
    use apikeys::auth::{
        Authenticator as _,
        remote::{RemoteAuthenticator, RemoteConfig},
    };
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let pki = Pki::new();
    let app = TestApp::spawn_with(|c| pki.serve(c, true)).await;
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let tls = |identity: Option<(&str, &str)>| {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca.pem"))).domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(read(cert), read(key)));
        }
        tls
    };
    let remote = |tls: ClientTlsConfig| {
        let endpoint = Endpoint::from_shared(format!("https://{}", app.addr)).unwrap().tls_config(tls).unwrap();
        RemoteAuthenticator::new(endpoint.connect_lazy(), RemoteConfig::default()).unwrap()
    };

    let trusted = remote(tls(Some(("client.pem", "client-key.pem"))));
    let principal = trusted.authenticate(credential(&app.admin_token)).await.unwrap();
    assert!(principal.permissions.iter().any(|p| p == "api_keys_admin"), "{principal:?}");

    for refused in [remote(tls(None)), remote(tls(Some(("stranger.pem", "stranger-key.pem"))))] {
        let error = refused.authenticate(credential(&app.admin_token)).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
    }
}
