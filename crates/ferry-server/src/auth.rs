//! Bearer tokens: `Caller` resolves the token to its role (401 when missing or unknown);
//! handlers call [`Caller::need`] (403 for a token of another role).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use ferry_format::api::Role;

use crate::error::ApiError;
use crate::state::{blocking, SharedState};

/// The authenticated caller's role.
#[derive(Clone, Copy, Debug)]
pub struct Caller(pub Role);

impl Caller {
    pub fn need(self, role: Role) -> Result<(), ApiError> {
        if self.0.allows(role) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this route needs a {} token and yours is a {} token: create one with `appliance token create --role {}`",
                    role_name(role),
                    role_name(self.0),
                    role_name(role)
                ),
            ))
        }
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Backup => "backup",
        Role::Restore => "restore",
        Role::Admin => "admin",
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
        match blocking(move || st.tokens.role_of(&token)).await? {
            Some(role) => Ok(Caller(role)),
            None => Err(unauthorized(
                "unknown token: create one with `appliance token create` on the appliance",
            )),
        }
    }
}
