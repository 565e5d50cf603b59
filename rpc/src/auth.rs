//! Who is calling: the cell's certificate authority, credentials, and identities.
//!
//! A cell has its own CA (`ca.pem` + `ca.key`, made by [`init_ca`]). Everyone who talks to a
//! Borgmaster or a Borglet holds a certificate it signed ([`issue`]), and every gRPC connection
//! is mutual TLS (rustls through tonic): the server proves it belongs to the cell, and the
//! client's certificate says who it is. The identity is one URI in the certificate's subject
//! alternative names, `borg://<role>/<name>`:
//!
//! | role      | who                                  | may                                              |
//! |-----------|--------------------------------------|--------------------------------------------------|
//! | `user`    | a person or robot account            | read the cell; write jobs whose `user` is theirs |
//! | `admin`   | a cell administrator                 | everything, including quota, machines, replicas  |
//! | `machine` | the Borglet of machine `<name>`      | register and report for that machine only        |
//! | `replica` | Borgmaster replica `<name>` (its id) | Raft, forwarding writes, polling Borglets        |
//!
//! A credentials directory holds `ca.pem` (the cell's CA certificate), `cert.pem` and `key.pem`
//! (the holder's certificate and private key, mode 0600).

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity as TlsIdentity, ServerTlsConfig};

/// Kind of caller, from the identity URI's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A user: owns jobs whose `user` is their name.
    User,
    /// A cell administrator: may do anything.
    Admin,
    /// The Borglet of one machine.
    Machine,
    /// A Borgmaster replica.
    Replica,
}

impl Role {
    /// The role's name in identity URIs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Machine => "machine",
            Role::Replica => "replica",
        }
    }

    /// Parses a role name (`user`, `admin`, `machine`, `replica`).
    ///
    /// Errors: any other string; the message lists the valid ones.
    pub fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "user" => Role::User,
            "admin" => Role::Admin,
            "machine" => Role::Machine,
            "replica" => Role::Replica,
            _ => return Err(Error::UnknownRole(s.to_string())),
        })
    }
}

/// An authenticated caller: a role and a name (user name, machine id, or replica id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// What the caller is.
    pub role: Role,
    /// The user name, machine id or replica id.
    pub name: String,
}

/// URI scheme of identities in certificates.
const SCHEME: &str = "borg://";

impl Identity {
    /// A new identity.
    pub fn new(role: Role, name: impl Into<String>) -> Identity {
        Identity { role, name: name.into() }
    }

    /// `borg://<role>/<name>`, as written into certificates.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.role.as_str(), self.name)
    }

    /// Parses `borg://<role>/<name>`.
    ///
    /// Errors: another scheme, an unknown role, or an empty or malformed name (names are
    /// 1-253 characters of `[A-Za-z0-9._-]`).
    pub fn parse_uri(uri: &str) -> Result<Identity> {
        let bad = |problem| Error::BadIdentity { uri: uri.to_string(), problem };
        let rest = uri.strip_prefix(SCHEME).ok_or_else(|| bad(" is not a borg:// identity"))?;
        let (role, name) = rest.split_once('/').ok_or_else(|| bad(": expected borg://<role>/<name>"))?;
        check_name(name)?;
        Ok(Identity { role: Role::parse(role)?, name: name.to_string() })
    }

    /// True for admins (who may do anything users may not).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.role.as_str(), self.name)
    }
}

/// Checks an identity name: 1-253 characters of `[A-Za-z0-9._-]`.
///
/// Errors: the name is empty, too long, or has another character (named in the message).
pub fn check_name(name: &str) -> Result<()> {
    let bad = |problem: String| Error::BadName { name: name.to_string(), problem };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("must be 1-253 characters".into()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(bad(format!("has {c:?}: only letters, digits, '.', '_' and '-' are allowed")));
    }
    Ok(())
}

/// The identity in a DER certificate: its `borg://` subject alternative name.
///
/// Errors: the certificate does not parse, or has no (or a malformed) `borg://` URI.
pub fn identity_of_der(der: &[u8]) -> Result<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Certificate(format!("certificate does not parse: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Certificate(format!("certificate's subject alternative names do not parse: {e}")))?
        .ok_or_else(|| {
            Error::Certificate("certificate has no subject alternative names (no borg:// identity)".into())
        })?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if uri.starts_with(SCHEME) {
                return Identity::parse_uri(uri);
            }
        }
    }
    Err(Error::Certificate("certificate has no borg:// identity URI".into()))
}

/// The identity of the peer of a request served over mutual TLS, from its client certificate;
/// None on a plain (insecure) connection or when the client presented no certificate.
///
/// Errors: the certificate (already verified against the cell's CA by rustls) carries no
/// usable identity.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<Result<Identity>> {
    let certs = req.peer_certs()?;
    let first = certs.first()?;
    Some(identity_of_der(first.as_ref()))
}

/// Authenticates the caller of `req` when `auth` is on: its client certificate's identity.
/// Returns None with `auth` off (`--insecure`: anyone may call).
///
/// Errors: UNAUTHENTICATED when the caller presented no certificate or one without an
/// identity (the message says how to get one); PERMISSION_DENIED when its role is not in
/// `roles` (the message names the rule `rule`).
pub fn authenticate<T>(
    req: &tonic::Request<T>,
    auth: bool,
    roles: &[Role],
    rule: &str,
) -> Result<Option<Identity>, tonic::Status> {
    if !auth {
        return Ok(None);
    }
    let id = match peer_identity(req) {
        None => return Err(tonic::Status::unauthenticated(
            "no client certificate: this cell requires mutual TLS with a certificate from its CA (borgctl --credentials DIR; an admin issues one with `borgctl certs issue`)",
        )),
        Some(Err(e)) => return Err(tonic::Status::unauthenticated(format!("client certificate: {e}"))),
        Some(Ok(id)) => id,
    };
    if !roles.is_empty() && !roles.contains(&id.role) {
        return Err(tonic::Status::permission_denied(format!(
            "permission denied by rule \"{rule}\": the caller is {id}"
        )));
    }
    Ok(Some(id))
}

static PROCESS: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();

/// Makes `c` this process's credentials for every outgoing connection (a process holds one
/// identity). Only the first call takes effect.
pub fn install(c: Credentials) {
    let _ = PROCESS.set(c);
}

/// The credentials [`install`]ed in this process; None when it runs insecure.
pub fn installed() -> Option<&'static Credentials> {
    PROCESS.get()
}

/// Files of a credentials directory.
pub const CA_FILE: &str = "ca.pem";
/// The holder's certificate.
pub const CERT_FILE: &str = "cert.pem";
/// The holder's private key.
pub const KEY_FILE: &str = "key.pem";
/// The CA's private key (only in the CA directory).
pub const CA_KEY_FILE: &str = "ca.key";

/// A holder's credentials, loaded from a directory (see the module docs).
#[derive(Clone)]
pub struct Credentials {
    /// Where they were loaded from.
    pub dir: PathBuf,
    /// The cell CA's certificate (PEM).
    pub ca_pem: String,
    /// The holder's certificate (PEM).
    pub cert_pem: String,
    /// The holder's private key (PEM).
    pub key_pem: String,
    /// Who the certificate says the holder is.
    pub identity: Identity,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("dir", &self.dir).field("identity", &self.identity).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn write_file(path: &Path, data: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(io(path))?;
    f.write_all(data.as_bytes()).and_then(|_| f.sync_all()).map_err(io(path))
}

/// DER bytes of the first PEM block in `pem`, read from `what`.
///
/// Errors: `pem` holds no PEM block (the message names `what`).
fn pem_der(pem: &str, what: &Path) -> Result<Vec<u8>> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map(|(_, p)| p.contents)
        .map_err(|_| Error::File { path: what.to_path_buf(), problem: "not a PEM certificate".into() })
}

impl Credentials {
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from `dir` and reads the identity from the
    /// certificate.
    ///
    /// Errors: a file is missing or unreadable, or the certificate carries no identity; the
    /// message names the file.
    pub fn load(dir: &Path) -> Result<Credentials> {
        let cert_path = dir.join(CERT_FILE);
        let cert_pem = read(&cert_path)?;
        let identity = identity_of_der(&pem_der(&cert_pem, &cert_path)?)
            .map_err(|e| Error::File { path: cert_path.clone(), problem: e.to_string() })?;
        Ok(Credentials {
            dir: dir.to_path_buf(),
            ca_pem: read(&dir.join(CA_FILE))?,
            cert_pem,
            key_pem: read(&dir.join(KEY_FILE))?,
            identity,
        })
    }

    /// TLS for a server holding these credentials: its certificate, and client certificates
    /// verified against the cell's CA. With `client_cert_optional` a client may connect without
    /// one (the server then refuses its calls with a clear UNAUTHENTICATED error instead of a
    /// failed handshake); a certificate from another CA always fails the handshake.
    pub fn server_tls(&self, client_cert_optional: bool) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(client_cert_optional)
    }

    /// TLS for a client holding these credentials, connecting to `host` (a DNS name or IP the
    /// server's certificate must name).
    pub fn client_tls(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(host)
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// An endpoint for `address` (`host:port`): plain HTTP/2 without credentials, mutual TLS with
/// them (the server's certificate must name the host).
///
/// Errors: the address is malformed, or the TLS configuration is refused.
pub fn endpoint(address: &str, credentials: Option<&Credentials>) -> Result<Endpoint> {
    let bad = |e: tonic::transport::Error| Error::BadAddress(format!("bad address {address:?}: {e}"));
    match credentials {
        None => Endpoint::from_shared(format!("http://{address}")).map_err(bad),
        Some(c) => Endpoint::from_shared(format!("https://{address}"))
            .map_err(bad)?
            .tls_config(c.client_tls(host_of(address)))
            .map_err(|e| Error::Tls { address: address.to_string(), problem: e.to_string() }),
    }
}

fn crypto(step: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::Crypto { step, problem: e.to_string() }
}

/// Creates a cell CA in `dir` (`ca.pem`, and `ca.key` with mode 0600), valid for 10 years.
///
/// Errors: the CA exists already there (never overwritten), or a file cannot be written.
pub fn init_ca(dir: &Path, cell: &str) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    if dir.join(CA_KEY_FILE).exists() {
        return Err(Error::File {
            path: dir.join(CA_KEY_FILE),
            problem: "a CA exists already; not overwritten".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate().map_err(crypto("generating the CA key"))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, format!("borg cell {cell} CA"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = params.not_before + std::time::Duration::from_secs(3600 * 24 * 365 * 30);
    let cert = params.self_signed(&key).map_err(crypto("signing the CA certificate"))?;
    write_file(&dir.join(CA_KEY_FILE), &key.serialize_pem(), 0o600)?;
    write_file(&dir.join(CA_FILE), &cert.pem(), 0o644)
}

/// Issues credentials for `identity` signed by the CA in `ca_dir` into `out_dir` (`ca.pem`,
/// `cert.pem`, `key.pem` with mode 0600; the directory is made mode 0700). `hosts` are the DNS
/// names and IP addresses a server certificate is valid for (replicas and Borglets:
/// where others reach them; `localhost` and `127.0.0.1` are always included).
///
/// Errors: the CA cannot be read, the name or a host is malformed, or a file cannot be written.
pub fn issue(ca_dir: &Path, identity: &Identity, hosts: &[String], out_dir: &Path) -> Result<()> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    use std::os::unix::fs::PermissionsExt;
    check_name(&identity.name)?;
    let ca_pem = read(&ca_dir.join(CA_FILE))?;
    let file = |path: PathBuf| move |e: rcgen::Error| Error::File { path, problem: e.to_string() };
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join(CA_KEY_FILE))?).map_err(file(ca_dir.join(CA_KEY_FILE)))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(file(ca_dir.join(CA_FILE)))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, identity.uri());
    let ia5 = |s: &str| {
        rcgen::string::Ia5String::try_from(s)
            .map_err(|e| Error::BadHost { host: s.to_string(), problem: e.to_string() })
    };
    params.subject_alt_names.push(SanType::URI(ia5(&identity.uri())?));
    let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    all.extend(hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()));
    all.dedup();
    for h in &all {
        params.subject_alt_names.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(ia5(h)?),
        });
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = params.not_before + std::time::Duration::from_secs(3600 * 24 * 365 * 30);
    let key = KeyPair::generate().map_err(crypto("generating a key"))?;
    let cert = params.signed_by(&key, &issuer).map_err(crypto("signing the certificate"))?;
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    std::fs::set_permissions(out_dir, std::fs::Permissions::from_mode(0o700)).map_err(io(out_dir))?;
    write_file(&out_dir.join(KEY_FILE), &key.serialize_pem(), 0o600)?;
    write_file(&out_dir.join(CERT_FILE), &cert.pem(), 0o644)?;
    write_file(&out_dir.join(CA_FILE), &ca_pem, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_round_trip_and_refuse_junk() {
        let id = Identity::new(Role::Machine, "m-1.rack2");
        assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), id);
        assert!(Identity::parse_uri("https://user/a").unwrap_err().to_string().contains("not a borg://"));
        assert!(Identity::parse_uri("borg://root/a").unwrap_err().to_string().contains("unknown role"));
        assert!(Identity::parse_uri("borg://user/a/b").unwrap_err().to_string().contains("'/'"));
        assert!(Identity::parse_uri("borg://user/").unwrap_err().to_string().contains("1-253"));
    }

    #[test]
    fn issued_credentials_carry_their_identity_and_chain_to_the_ca() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        init_ca(&ca, "test").unwrap();
        assert!(init_ca(&ca, "test").unwrap_err().to_string().contains("exists already"));
        let out = d.path().join("alice");
        issue(&ca, &Identity::new(Role::User, "alice"), &["node1".into(), "10.0.0.7".into()], &out).unwrap();
        let c = Credentials::load(&out).unwrap();
        assert_eq!(c.identity, Identity::new(Role::User, "alice"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // the certificate is signed by the CA's key
        let der = pem_der(&c.cert_pem, &out).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = pem_der(&c.ca_pem, &out).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert!(issue(&ca, &Identity::new(Role::User, "bad name"), &[], &out).unwrap_err().to_string().contains("' '"));
    }
}
