//! Who is calling, and what they may do (issue 8; roles in `borg_rpc::auth`): every RPC starts
//! by asking [`BorgmasterService::caller`] and checks the answer against its rule.

use super::BorgmasterService;
use borg_proto as pb;
use borg_rpc::auth::{Identity, Role};
use tonic::{Request, Status};

/// Metadata a replica puts on a write it forwards: the original caller's identity URI
/// (`borg://role/name`). Honoured only on requests whose client certificate is a replica's.
pub(super) const FORWARDED_FOR: &str = "borg-forwarded-for";

/// Placeholder for env values of jobs the caller does not own (they may hold secrets).
pub const REDACTED: &str = "<redacted>";

/// Who is calling, for authorization (issue 8; roles in `borg_rpc::auth`).
pub enum Caller {
    /// Auth is off (`--insecure`): anyone may do anything.
    Anyone,
    /// An authenticated caller (for a forwarded write: the original caller).
    Is(Identity),
}

impl Caller {
    /// Ok for admins (and with auth off).
    ///
    /// Errors: PERMISSION_DENIED naming `rule` and the caller.
    pub fn admin(&self, rule: &str) -> Result<(), Status> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Is(id) if id.is_admin() => Ok(()),
            Caller::Is(id) => {
                Err(Status::permission_denied(format!("permission denied by rule \"{rule}\": the caller is {id}")))
            }
        }
    }

    /// Who, for events: the identity, or empty with auth off.
    pub fn name(&self) -> String {
        match self {
            Caller::Anyone => String::new(),
            Caller::Is(id) => id.to_string(),
        }
    }

    /// Whether the caller may act on what belongs to user `owner`: the user themself or an
    /// admin (anyone with auth off).
    pub fn owns(&self, owner: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Is(id) => id.is_admin() || (id.role == Role::User && id.name == owner),
        }
    }

    /// Ok when the caller [`owns`](Self::owns) what belongs to `owner`.
    ///
    /// Errors: PERMISSION_DENIED naming `rule`, the owner and the caller.
    pub fn require_owner(&self, owner: &str, rule: &str) -> Result<(), Status> {
        match self {
            _ if self.owns(owner) => Ok(()),
            Caller::Is(id) => Err(Status::permission_denied(format!(
                "permission denied by rule \"{rule}\": it belongs to user {owner:?}, the caller is {id}"
            ))),
            Caller::Anyone => Ok(()),
        }
    }
}

/// Redacts the env values of `job` unless `caller` owns it.
pub(super) fn redact(mut job: pb::Job, caller: &Caller) -> pb::Job {
    if let Some(spec) = job.spec.as_mut() {
        if !caller.owns(&spec.user) {
            for v in spec.env.values_mut() {
                *v = REDACTED.into();
            }
        }
    }
    job
}

impl BorgmasterService {
    /// Who is calling `req`: with auth on, its client certificate's identity (for a write a
    /// replica forwarded, the original caller it names).
    ///
    /// Errors: UNAUTHENTICATED without a usable certificate; INVALID_ARGUMENT for a malformed
    /// forwarded identity.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let Some(id) = borg_rpc::auth::authenticate(req, self.master.config.auth, &[], "")? else {
            return Ok(Caller::Anyone);
        };
        if id.role == Role::Replica {
            if let Some(v) = req.metadata().get(FORWARDED_FOR) {
                let uri = v.to_str().map_err(|_| Status::invalid_argument(format!("{FORWARDED_FOR}: not ASCII")))?;
                return Identity::parse_uri(uri)
                    .map(Caller::Is)
                    .map_err(|e| Status::invalid_argument(format!("{FORWARDED_FOR}: {e}")));
            }
        }
        Ok(Caller::Is(id))
    }
}
