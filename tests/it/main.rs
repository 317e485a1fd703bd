//! sieve's integration tests, in one binary (ripgrep's layout): real clients and servers
//! around the real `sieve` executable.

mod harness;
mod otlp;
mod sink;
