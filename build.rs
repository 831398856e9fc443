//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler (protox), so the build needs no
//! system `protoc`, and writes the encoded descriptor set that server reflection serves.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &["proto/apikeys/v1/api_keys.proto", "proto/incidents/v1/incidents.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    // One descriptor set per package, so each server's reflection lists only what it serves.
    for (proto, name) in [(PROTOS[0], "apikeys"), (PROTOS[1], "incidents")] {
        let mut one = protox::Compiler::new(["proto"])?;
        one.include_source_info(true).include_imports(true);
        one.open_file(proto)?;
        std::fs::write(out_dir.join(format!("{name}_descriptor.bin")), one.encode_file_descriptor_set())?;
    }

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;

    tonic_prost_build::configure()
        // prost's codec, except that a request that does not decode is INVALID_ARGUMENT.
        .codec_path("apikeys::codec::StrictCodec")
        // These messages carry secrets: their Debug is written by hand and redacts them.
        .skip_debug([
            "apikeys.v1.CreateApiKeyResponse",
            "apikeys.v1.RegenerateApiKeySecretResponse",
            "apikeys.v1.AuthenticateRequest",
        ])
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
