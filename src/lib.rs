//! ferry: a fast, safe file server and client over TCP.
pub mod protocol;
