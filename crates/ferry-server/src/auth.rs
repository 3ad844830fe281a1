//! Bearer tokens: `Caller` resolves the token to its role, public id and machine scope (401 when
//! missing, unknown, revoked or expired); handlers call [`Caller::need`] (403 for a token of
//! another role) and [`Caller::need_machine`] (403 for a machine outside the token's scope). A
//! token that is not in tokens.json may be an agent's credential (`<agent id>.<hex>`, hash in
//! `agents/<id>.json`): then the caller is that agent, with role [`Role::Agent`]
//! ([`Caller::need_agent`]), and while it runs a backup job also a backup credential for that
//! job's machine ([`Caller::backup_job`]). Last, it may be a source machine's credential (`src-<machine>.<hex>`,
//! hash in `sources/<machine>.json`): then the caller is a backup credential for that one
//! machine, with the public id `src-<machine>` (`crate::sources`).
//!
//! Last use is recorded off the request path, at most once a minute per token.

use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use ferry_format::api::{MachineScope, Role, TokenState};

use crate::error::ApiError;
use crate::state::{blocking, SharedState};

/// The authenticated caller: its role, for an agent credential the agent's id, for a token in
/// tokens.json its public id and scope.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    pub agent: Option<String>,
    pub token: Option<TokenGrant>,
}

/// What a tokens.json token grants beyond its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// Public id (`tok-…`): sessions are bound to it, snapshots record it.
    pub id: String,
    pub scope: MachineScope,
}

impl Caller {
    /// The backup job an agent credential is running: while it lasts the credential is also a
    /// backup credential for that job's one machine (sessions bound to the job's id).
    pub fn backup_job(&self) -> Option<&str> {
        (self.role == Role::Agent)
            .then_some(self.token.as_ref())
            .flatten()
            .map(|t| t.id.as_str())
    }

    pub fn need(&self, role: Role) -> Result<(), ApiError> {
        if self.role.allows(role) || (role == Role::Backup && self.backup_job().is_some()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this route needs a {} token and yours is a {} token: create one with `appliance token create --role {}`",
                    role.name(),
                    self.role.name(),
                    role.name()
                ),
            ))
        }
    }

    /// The machines this caller may write or read (agents: see `agents.rs`).
    pub fn scope(&self) -> MachineScope {
        self.token
            .as_ref()
            .map_or(MachineScope::All, |t| t.scope.clone())
    }

    pub fn token_id(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.id.as_str())
    }

    /// 403 unless `machine` is in the token's scope.
    pub fn need_machine(&self, machine: &str) -> Result<(), ApiError> {
        let scope = self.scope();
        if scope.allows(machine) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {} may only reach machines {scope}, not machine {machine}: use a token for {machine} \
                 (`appliance token create --role {} --machine {machine}`)",
                self.token_id().unwrap_or("?"),
                self.role.name()
            ),
        ))
    }

    /// The credential of agent `id`, or an admin token.
    pub fn need_agent(&self, id: &str) -> Result<(), ApiError> {
        match (&self.role, &self.agent) {
            (Role::Admin, _) => Ok(()),
            (Role::Agent, Some(me)) if me == id => Ok(()),
            (Role::Agent, Some(me)) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this credential belongs to agent {me}, not {id}"),
            )),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this route needs agent {id}'s credential and yours is a {} token: enroll (POST /agents/enroll) to get one",
                    self.role.name()
                ),
            )),
        }
    }
}

/// What a bearer token turned out to be.
enum Resolved {
    Caller(Caller),
    Refused(String),
    Unknown,
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "send `Authorization: Bearer TOKEN` with a token from `appliance token create`",
                )
            })?;
        let st = state.clone();
        let resolved = blocking(move || {
            let now = SystemTime::now();
            if let Some(found) = st.tokens.lookup(&token)? {
                let rec = &found.record;
                return Ok(match rec.state(now) {
                    TokenState::Revoked => Resolved::Refused(format!(
                        "token {} was revoked at {}: ask the appliance's operator for a new one \
                         (`appliance token create`) and use it instead",
                        rec.id,
                        rec.revoked.as_deref().unwrap_or("?")
                    )),
                    TokenState::Expired => Resolved::Refused(format!(
                        "token {} expired at {}: ask the appliance's operator for a new one \
                         (`appliance token create --expires ...`) and use it instead",
                        rec.id,
                        rec.expires.as_deref().unwrap_or("?")
                    )),
                    TokenState::Active => {
                        if st.tokens.claim_use(&found, now) {
                            record_use(&st, found.hash.clone(), now);
                        }
                        Resolved::Caller(Caller {
                            role: rec.role,
                            agent: None,
                            token: Some(TokenGrant {
                                id: rec.id.clone(),
                                scope: rec.scope(),
                            }),
                        })
                    }
                });
            }
            if let Some(a) = st.store.agent_for_credential(&token)? {
                let backup = st.store.agent_backup_job(&a)?;
                return Ok(Resolved::Caller(Caller {
                    role: Role::Agent,
                    agent: Some(a.agent),
                    token: backup.map(|(job, machine)| TokenGrant {
                        id: job,
                        scope: MachineScope::Only(vec![machine]),
                    }),
                }));
            }
            Ok(match st.store.source_for_credential(&token)? {
                Some(src) => Resolved::Caller(Caller {
                    role: Role::Backup,
                    agent: None,
                    token: Some(TokenGrant {
                        id: crate::sources::source_id(&src.machine),
                        scope: MachineScope::Only(vec![src.machine]),
                    }),
                }),
                None => Resolved::Unknown,
            })
        })
        .await?;
        match resolved {
            Resolved::Caller(c) => Ok(c),
            Resolved::Refused(why) => Err(unauthorized(&why)),
            Resolved::Unknown => Err(unauthorized(
                "unknown token: create one with `appliance token create` on the appliance (an agent whose credential was replaced by a newer enrollment must enroll again)",
            )),
        }
    }
}

/// Write last use to tokens.json on another blocking thread: the request does not wait for
/// the lock and fsync, and a failure only costs a stale `last_used`.
fn record_use(st: &SharedState, hash: String, now: SystemTime) {
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = st.store.record_token_use(&hash, now) {
            tracing::warn!("record the last use of a token: {e}");
        }
    });
}
