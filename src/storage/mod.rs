//! Durable delivery: the `file_storage` extension and the log a pipeline keeps in it.

pub mod log;
