//! The bad-input corpus (issue 14): every request of `tests/corpus/bad_requests.jsonl` (malformed
//! fields of every RPC, wrong wire types, broken encodings, hostile metadata, forged page tokens,
//! oversized messages) is sent as raw bytes to a running server over one connection. Each answer
//! must be one of the codes the corpus documents for it (never INTERNAL, UNKNOWN or UNAVAILABLE),
//! and after each one the same connection must still serve a valid request.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use tonic::{
    Code, Request,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::Channel,
};

use crate::harness::*;

const CORPUS: &str = include_str!("../corpus/bad_requests.jsonl");

/// Sends and receives message bytes as they are, so the corpus can send what no generated client
/// would.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

const STREAMING: &[&str] = &["WatchKeyChanges", "WatchAuditEvents"];

/// Sends `body` to `method` with `metadata`; the code of the answer (for a stream: of its first
/// message, OK, or of its status).
async fn send(channel: &Channel, method: &str, metadata: &[(String, Vec<u8>)], body: Vec<u8>) -> (Code, String) {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the connection is ready");
    let path: http::uri::PathAndQuery = format!("/apikeys.v1.ApiKeyService/{method}").parse().unwrap();
    let mut request = Request::new(body);
    request.set_timeout(Duration::from_secs(10));
    for (name, value) in metadata {
        let name: AsciiMetadataKey = name.parse().unwrap();
        request.metadata_mut().append(name, AsciiMetadataValue::try_from(value.as_slice()).unwrap());
    }
    if STREAMING.contains(&method) {
        match grpc.server_streaming(request, path, Raw).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                    Ok(Ok(_)) => (Code::Ok, String::new()),
                    Ok(Err(status)) => (status.code(), status.message().to_owned()),
                    Err(_) => (Code::DeadlineExceeded, "no first message within 5 s".to_owned()),
                }
            }
            Err(status) => (status.code(), status.message().to_owned()),
        }
    } else {
        match grpc.unary(request, path, Raw).await {
            Ok(_) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        }
    }
}

fn code_named(name: &str) -> Code {
    (0..=16).map(Code::from).find(|code| apikeys::error::code_name(*code) == name).unwrap_or_else(|| {
        panic!("unknown code name {name:?} in the corpus");
    })
}

#[tokio::test]
async fn every_request_of_the_bad_input_corpus_gets_its_documented_code_and_the_connection_survives() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let reader = admin.create("Corpus reader", &["read_data"]).await.unwrap().token;
    let reporter = admin.create("Corpus reporter", &["api_keys_usage_report"]).await.unwrap().token;
    let channel = app.channel().await;
    let mut probe = apikeys::pb::api_key_service_client::ApiKeyServiceClient::new(channel.clone());

    let (mut cases, mut failures) = (0, Vec::new());
    let mut methods = std::collections::HashSet::new();
    for line in CORPUS.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = case["id"].as_str().unwrap();
        let method = case["method"].as_str().unwrap();
        methods.insert(format!("/apikeys.v1.ApiKeyService/{method}"));
        let bearer = |token: &str| ("authorization".to_owned(), format!("Bearer {token}").into_bytes());
        let mut metadata = match case["auth"].as_str().unwrap() {
            "admin" => vec![bearer(&app.admin_token)],
            "reader" => vec![bearer(&reader)],
            "reporter" => vec![bearer(&reporter)],
            "none" | "raw" => vec![],
            other => panic!("{id}: unknown auth {other:?}"),
        };
        for pair in case["metadata"].as_array().unwrap() {
            metadata.push((pair[0].as_str().unwrap().to_owned(), hex(pair[1].as_str().unwrap())));
        }
        let expect: Vec<Code> =
            case["expect"].as_array().unwrap().iter().map(|c| code_named(c.as_str().unwrap())).collect();
        assert!(
            !expect.iter().any(|c| matches!(c, Code::Internal | Code::Unknown | Code::Unavailable)),
            "{id}: the corpus may not expect a server failure"
        );
        let (code, message) = send(&channel, method, &metadata, hex(case["body"].as_str().unwrap())).await;
        cases += 1;
        if !expect.contains(&code) {
            failures.push(format!("{id}: {code:?} {message:?}, expected {expect:?}"));
        }
        // The connection still serves the next valid request.
        if let Err(status) = probe.list_permissions(apikeys::pb::ListPermissionsRequest {}).await {
            failures.push(format!("{id}: the next valid request failed: {status:?}"));
            probe = apikeys::pb::api_key_service_client::ApiKeyServiceClient::new(app.channel().await);
        }
    }
    assert!(cases >= 500, "the corpus holds {cases} requests");
    for method in apikeys::methods::all().iter().filter(|m| m.path.starts_with("/apikeys.v1.")) {
        assert!(methods.contains(&method.path), "the corpus has no request for {}", method.path);
    }
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// Paths the server does not serve are refused by default (PERMISSION_DENIED from the access
/// policy, before any routing), whether under the API key service's name or not; on the same
/// connection the API key service (dispatched to directly) and the health service (through tonic's
/// router) both answer.
#[tokio::test]
async fn unknown_paths_are_refused_and_both_routes_serve() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let (code, _) = send(&channel, "NoSuchMethod", &[], Vec::new()).await;
    assert_eq!(code, Code::PermissionDenied);
    for path in ["/no.such.v1.Service/Method", "/apikeys.v1.ApiKeyServiceX/Authenticate", "/apikeys.v1.ApiKeyService"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc.unary(Request::new(Vec::new()), path.parse().unwrap(), Raw).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{path}: {status:?}");
    }
    let (code, message) = send(&channel, "Authenticate", &[], Vec::new()).await;
    assert_eq!(code, Code::InvalidArgument, "an empty Authenticate request: {message}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health.check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap().into_inner();
    assert_eq!(serving.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
}
