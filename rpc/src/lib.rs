//! How borg processes talk to each other over gRPC.
//!
//! - [`auth`]: the cell's certificate authority, identities (`borg://<role>/<name>`) and
//!   credentials; every connection is mutual TLS unless a process runs `--insecure`.
//! - [`client`]: reaching the Borgmaster from `--master host:port[,host:port...]`.
//! - [`server`]: what every borg gRPC server shares (HTTP/2 settings, graceful shutdown on a
//!   signal, a daemon's exit status).
//!
//! Errors are one [`Error`] enum; binaries wrap it in `anyhow` in their `main`.
#![deny(missing_docs)]

pub mod auth;
pub mod client;
mod error;
pub mod server;

pub use error::{Error, Result};
