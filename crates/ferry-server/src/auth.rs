//! Bearer tokens: `Caller` resolves the token to its role (401 when missing or unknown);
//! handlers call [`Caller::need`] (403 for a token of another role). A token that is not in
//! tokens.json may be an agent's credential (`<agent id>.<hex>`, hash in `agents/<id>.json`):
//! then the caller is that agent, with role [`Role::Agent`] ([`Caller::need_agent`]).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use ferry_format::api::Role;

use crate::error::ApiError;
use crate::state::{blocking, SharedState};

/// The authenticated caller: its role, and for an agent credential the agent's id.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    pub agent: Option<String>,
}

impl Caller {
    pub fn need(&self, role: Role) -> Result<(), ApiError> {
        if self.role.allows(role) {
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
        let found = blocking(move || {
            if let Some(role) = st.tokens.role_of(&token)? {
                return Ok(Some(Caller { role, agent: None }));
            }
            Ok(st.store.agent_for_credential(&token)?.map(|a| Caller {
                role: Role::Agent,
                agent: Some(a.agent),
            }))
        })
        .await?;
        found.ok_or_else(|| {
            unauthorized(
                "unknown token: create one with `appliance token create` on the appliance (an agent whose credential was replaced by a newer enrollment must enroll again)",
            )
        })
    }
}
