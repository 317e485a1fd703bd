//! sieve's integration tests, in one binary (ripgrep's layout): real clients and servers
//! around the real `sieve` executable.

mod auth;
mod chart;
mod cli;
mod connectors;
mod fuzz_corpus;
mod harness;
mod integrity;
mod k8s;
mod kafka;
mod lifecycle;
mod loki;
mod otlp;
mod prometheus;
mod redaction;
mod sink;
mod storage;
mod syslog;
mod tail_sampling;
mod tenants;
