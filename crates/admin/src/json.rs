//! The API's one error shape as a response ([`ApiError`]), and a JSON body extractor
//! ([`JsonBody`]) whose refusals use it and name the field at fault (axum's own `Json`
//! answers in plain text).

use crate::ops::{ErrorBody, ErrorDetail, ErrorKind, OpError};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// An error answer: a status and an [`ErrorBody`].
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            field: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(field: Option<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            field,
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        let (status, code) = match e.kind {
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            field: e.field,
            ..ApiError::new(status, code, e.message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                field: self.field,
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchboard\""),
            );
        }
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// A JSON request body of type `T`; refused with an [`ApiError`] naming the field.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON, with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(None, format!("cannot read the body: {e}")))?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a body, naming the field at fault: the path serde was in, or the field
/// named by a "missing field" or "unknown field" message.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let named = message
            .split_once('`')
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned())
            .filter(|_| {
                message.starts_with("missing field") || message.starts_with("unknown field")
            });
        // "." is the document itself, "?" a place serde could not tell.
        let path = Some(path).filter(|p| !matches!(p.as_str(), "" | "." | "?"));
        let field = match (named, path) {
            (Some(n), None) => Some(n),
            (Some(n), Some(p)) if p == n || p.ends_with(&format!(".{n}")) => Some(p),
            (Some(n), Some(p)) => Some(format!("{p}.{n}")),
            (None, p) => p,
        };
        // serde's text ends with the position, which a person does not need.
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        ApiError::invalid(field, message)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::{NewUser, UserChange};

    #[test]
    fn errors_name_the_field() {
        let e = parse::<NewUser>(br#"{"name": "a"}"#).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("password"));
        assert_eq!(e.message, "missing field `password`");
        let e = parse::<NewUser>(br#"{"name": "a", "password": 5}"#)
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("password"));
        let e = parse::<NewUser>(br#"{"name": "a", "password": "p", "ext": "1"}"#)
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("ext"));
        let e = parse::<NewUser>(b"{").err().unwrap();
        assert_eq!(e.field, None);
    }

    #[test]
    fn a_null_extension_is_a_removal_and_an_absent_one_no_change() {
        let c: UserChange = parse(br#"{"extension": null}"#).unwrap();
        assert_eq!(c.extension, Some(None));
        let c: UserChange = parse(br#"{"extension": "201"}"#).unwrap();
        assert_eq!(c.extension, Some(Some("201".into())));
        let c: UserChange = parse(br#"{"password": "x"}"#).unwrap();
        assert_eq!(c.extension, None);
    }
}
