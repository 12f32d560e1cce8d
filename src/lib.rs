//! ferry: a fast, safe file server and client over TCP.
pub mod client;
pub mod protocol;
pub mod report;
pub mod server;
pub mod staging;
pub mod transport;
