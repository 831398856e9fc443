//! apikeys: a gRPC service that issues and validates API key accounts, and the client-side library
//! (generated client, credential parsing, auth tower layer) that other services embed.
//!
//! Data flows one way: `proto -> pb (generated) -> service (thin handlers) -> domain (rules) ->
//! store (sea-orm)`, with `auth` (credentials, hashing, caching, the tower layer) beside it and
//! `server` wiring it together. The `client` feature builds only what a consumer needs; `server`
//! (default) adds storage, hashing and the binary.

// The generated code names the codec `apikeys::codec::StrictCodec`, which must resolve here as
// it does in the example consumer compiled from the same `build.rs` output.
extern crate self as apikeys;

#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "client")]
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "client")]
pub mod codec;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "server")]
pub mod deadline;
#[cfg(feature = "server")]
pub mod dispatch;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "client")]
pub mod error;
#[cfg(feature = "server")]
pub mod failure_budget;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod lockout;
#[cfg(feature = "server")]
pub mod methods;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "client")]
pub mod pb;
#[cfg(feature = "server")]
pub mod peer_limit;
#[cfg(feature = "server")]
pub mod quota;
#[cfg(feature = "client")]
pub mod replicas;
#[cfg(feature = "server")]
pub mod revocation;
#[cfg(feature = "server")]
pub mod rpc_trace;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "client")]
pub mod striped;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "client")]
pub mod usage;

#[cfg(feature = "client")]
pub use error::{Error, Result};
