//! Receivers: the async edge where data enters.
//!
//! A receiver owns its sockets, turns requests into [`crate::model::Batch`]es and hands
//! them to its pipelines through [`crate::queue::Routes`] without blocking; when a
//! pipeline cannot take more it answers the client with a retryable refusal.

pub mod budget;
pub mod core;
pub mod kafka;
pub mod otlp;
pub mod syslog;
pub mod tenants;
