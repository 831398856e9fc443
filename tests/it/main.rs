//! The integration suite: one binary, real servers on 127.0.0.1:0, real tonic clients, a real
//! database. SQLite by default; set `APIKEYS_TEST_DATABASE_URL=postgres://...` to run the very same
//! tests on PostgreSQL.

mod audit;
mod authenticate;
mod bad_input;
mod cli;
mod config;
mod console;
mod crash;
mod harness;
#[allow(dead_code)]
#[path = "../../examples/incident_service/service.rs"]
mod incident_service;
mod incidents;
mod keys;
mod leaks;
mod lifecycle;
mod lockout;
mod metrics;
mod operations;
mod outage;
mod props;
mod python_client;
mod readme;
mod replicas;
mod restrictions;
mod revocation;
mod soft_delete;
mod tls;
mod upgrade;
mod usage;
mod users;
