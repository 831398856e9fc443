//! A client in another language, generated from `proto/` alone: grpcio-tools (from PyPI, in a venv
//! cached under `target/py-venv/`, keyed by the pinned version) generates Python stubs, and a Python
//! script drives CreateApiKey, Authenticate and DeleteApiKey against a real server.
//!
//! Nothing is skipped: without python3 or a reachable package index the test fails and says why.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::harness::*;

/// The pinned generator; changing it builds a fresh venv.
const REQUIREMENT: &str = "grpcio-tools==1.85.1";

/// The venv's python, creating the venv and installing grpcio-tools on first use.
fn venv_python() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").to_path_buf();
    let key: String = REQUIREMENT.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let venv = target.join("py-venv").join(key);
    let python = venv.join("bin").join("python");
    let stamp = venv.join("installed");
    if stamp.exists() && python.exists() {
        return python;
    }
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "creating a Python venv (python3 -m venv)");
    run(
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT]),
        "installing grpcio-tools from PyPI (is the package index reachable?)",
    );
    std::fs::write(&stamp, REQUIREMENT).unwrap();
    python
}

const SCRIPT: &str = r#"
import json, sys
import grpc
from apikeys.v1 import api_keys_pb2 as pb, api_keys_pb2_grpc as rpc

address, admin_token = sys.argv[1], sys.argv[2]
stub = rpc.ApiKeyServiceStub(grpc.insecure_channel(address))
admin = [("authorization", "Bearer " + admin_token)]
created = stub.CreateApiKey(
    pb.CreateApiKeyRequest(display_name="From Python", permissions=["read_data"]), metadata=admin)
principal = stub.Authenticate(
    pb.AuthenticateRequest(token=created.token, required_permissions=["read_data"])).principal
try:
    stub.Authenticate(pb.AuthenticateRequest(token=created.token, required_permissions=["edit_data"]))
    denied = "OK"
except grpc.RpcError as e:
    denied = e.code().name
stub.DeleteApiKey(pb.DeleteApiKeyRequest(id=created.api_key.id), metadata=admin)
try:
    stub.Authenticate(pb.AuthenticateRequest(token=created.token))
    after_delete = "OK"
except grpc.RpcError as e:
    after_delete = e.code().name
print(json.dumps({"id": created.api_key.id, "principal_key_id": principal.key_id,
                  "permissions": list(principal.permissions), "denied": denied, "after_delete": after_delete}))
"#;

#[tokio::test]
async fn a_generated_python_client_creates_authenticates_and_deletes() {
    let app = TestApp::spawn().await;
    let (address, admin_token) = (app.addr.to_string(), app.admin_token.clone());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("generated");
    let output = tokio::task::spawn_blocking(move || {
        let python = venv_python();
        let well_known = run(
            Command::new(&python).args([
                "-c",
                "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))",
            ]),
            "locating grpc_tools' well-known protos",
        );
        std::fs::create_dir_all(&out).unwrap();
        let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        run(
            Command::new(&python)
                .args(["-m", "grpc_tools.protoc"])
                .arg(format!("-I{}", proto_dir.display()))
                .arg(format!("-I{}", well_known.trim()))
                .arg(format!("--python_out={}", out.display()))
                .arg(format!("--grpc_python_out={}", out.display()))
                .arg(proto_dir.join("apikeys/v1/api_keys.proto")),
            "generating the Python client from proto/",
        );
        let script = out.join("drive.py");
        std::fs::write(&script, SCRIPT).unwrap();
        run(Command::new(&python).arg(&script).args([&address, &admin_token]).current_dir(&out), "the Python client")
    })
    .await
    .unwrap();
    let result: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    assert_eq!(result["principal_key_id"], result["id"]);
    assert_eq!(result["permissions"], serde_json::json!(["read_data"]));
    assert_eq!(result["denied"], "PERMISSION_DENIED");
    assert_eq!(result["after_delete"], "UNAUTHENTICATED");
    let deleted = app.admin().await.get(result["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(deleted.state(), apikeys::pb::api_key::State::Deleted);
}
