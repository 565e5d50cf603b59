//! The one error type of this crate.

use std::path::PathBuf;

/// Why an identity, credentials, a certificate or a connection could not be had. Each variant's
/// message names what was wrong and where (the file, the address, the name).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A role name other than `user`, `admin`, `machine` or `replica`.
    #[error("unknown role {0:?} (expected user, admin, machine or replica)")]
    UnknownRole(String),
    /// An identity URI that is not `borg://<role>/<name>`.
    #[error("{uri:?}{problem}")]
    BadIdentity {
        /// The URI as given.
        uri: String,
        /// What is wrong with it (starts with a space or a colon).
        problem: &'static str,
    },
    /// An identity name that is empty, too long, or has a character outside `[A-Za-z0-9._-]`.
    #[error("name {name:?} {problem}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A certificate that does not parse or carries no `borg://` identity.
    #[error("{0}")]
    Certificate(String),
    /// A file of a credentials or CA directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file that was read but is not what it should be (no PEM block, an existing CA, a
    /// certificate without an identity, a key rcgen refuses).
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Generating a key or signing a certificate failed.
    #[error("{step}: {problem}")]
    Crypto {
        /// What was being done ("generating the CA key", "signing the certificate", ...).
        step: &'static str,
        /// rcgen's error.
        problem: String,
    },
    /// A host name rcgen cannot put into a certificate.
    #[error("{host:?}: {problem}")]
    BadHost {
        /// The host as given.
        host: String,
        /// Why it was refused.
        problem: String,
    },
    /// An address that is not `host:port`, or no address at all.
    #[error("{0}")]
    BadAddress(String),
    /// tonic refused the TLS configuration for an address.
    #[error("TLS for {address}: {problem}")]
    Tls {
        /// The address.
        address: String,
        /// tonic's error.
        problem: String,
    },
    /// No Borgmaster replica could be reached; the message names each address and why.
    #[error("{0}")]
    Unreachable(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
