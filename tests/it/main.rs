//! Integration tests against a real Kafka broker, real RocksDB and the real daemon binary.
//! One binary, a module per area (see `common` for where the broker comes from).

mod cli;
#[allow(dead_code)] // shared with tests/faults, which uses more of it
mod common;
mod dashboard;
mod dead_letters;
mod engine;
mod hostile;
mod processing;
mod projection;
mod projection_support;
mod queries;
mod read_your_writes;
mod recovery;
mod redis_clients;
mod restore;
mod scaling;
mod security;
mod startup;
mod tls;
mod windows;
