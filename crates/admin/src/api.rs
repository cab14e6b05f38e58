//! The routes, their handlers and the OpenAPI document generated from them.
//!
//! Every route but `POST /api/login` passes [`require_admin`] first. Handlers call
//! [`Operations`] on the blocking pool: a slow database or a busy SIP loop holds a
//! blocking thread, never the runtime that accepts connections.

use crate::accounts;
use crate::auth::{self, Admin, Auth};
use crate::json::{ApiError, JsonBody};
use crate::ops::{
    ErrorBody, ErrorDetail, ForwardingView, NewUser, OpError, Operations, Registration, UserChange,
    UserView,
};
use axum::extract::{DefaultBodyLimit, Extension, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The address a request came from (set by the server for each connection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub ops: Arc<dyn Operations>,
    pub auth: Arc<Auth>,
    /// Password checks at once at most: each costs argon2's memory and tens of
    /// milliseconds of CPU, which a flood of logins must not multiply.
    pub verifying: Arc<tokio::sync::Semaphore>,
    pub openapi: Arc<String>,
}

/// Request bodies are small JSON documents.
const BODY_LIMIT: usize = 64 * 1024;

/// The API's routes over `ops`.
pub(crate) fn router(ops: Arc<dyn Operations>, secure_cookies: bool) -> Router {
    let state = AppState {
        ops,
        auth: Arc::new(Auth::new(secure_cookies)),
        verifying: Arc::new(tokio::sync::Semaphore::new(2)),
        openapi: Arc::new(openapi_json()),
    };
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session))
        .route("/api/registrations", get(list_registrations))
        .route(
            "/api/registrations/{id}",
            axum::routing::delete(delete_registration),
        )
        .route("/api/users", get(list_users).post(add_user))
        .route(
            "/api/users/{name}",
            get(get_user).patch(change_user).delete(remove_user),
        )
        .route("/api/openapi.json", get(openapi_doc))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Lets only authenticated administrators past, except to the login.
async fn require_admin(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == "/api/login" {
        return next.run(req).await;
    }
    match auth::authenticate(&st.auth, &st.ops, req.headers(), peer.0.ip()).await {
        Ok(admin) => {
            req.extensions_mut().insert(admin);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Runs an operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    ops: &Arc<dyn Operations>,
    f: impl FnOnce(&dyn Operations) -> Result<T, OpError> + Send + 'static,
) -> Result<T, ApiError> {
    let ops = Arc::clone(ops);
    tokio::task::spawn_blocking(move || f(ops.as_ref()))
        .await
        .map_err(|e| ApiError::internal(format!("the operation failed: {e}")))?
        .map_err(ApiError::from)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path")
}

/// `POST /api/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// The administrator's name.
    name: String,
    /// Their password.
    password: String,
}

/// Who is logged in.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    /// The administrator's name.
    name: String,
}

/// Logs in: the answer sets the session cookie.
#[utoipa::path(post, path = "/api/login", tag = "session", request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = SessionInfo),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Wrong name or password", body = ErrorBody),
        (status = 429, description = "Too many failed attempts from this address", body = ErrorBody),
    ))]
async fn login(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    body: Result<JsonBody<LoginRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let ip = peer.0.ip();
    // A locked-out address learns nothing more, not even whether its JSON was right.
    st.auth.check_not_locked(ip, Instant::now())?;
    let JsonBody(login) = body?;
    let permit = st
        .verifying
        .acquire()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let name = login.name.clone();
    let ok = blocking(&st.ops, move |ops| {
        let hash = ops.admin_password_hash(&login.name)?;
        // An unknown name costs a hash check too: the time says nothing.
        let phc: &str = match &hash {
            Some(h) => h,
            None => accounts::decoy_hash(),
        };
        Ok(accounts::verify_password(&login.password, phc) && hash.is_some())
    })
    .await?;
    drop(permit);
    if !ok {
        st.auth.failed(ip, Instant::now());
        tracing::warn!(source = %ip, admin = %name, "admin API: login failed");
        return Err(ApiError::unauthenticated("wrong name or password"));
    }
    st.auth.succeeded(ip);
    let id = st.auth.open_session(&name, Instant::now())?;
    tracing::info!(source = %ip, admin = %name, "admin API: logged in");
    let mut response = Json(SessionInfo { name }).into_response();
    let cookie = HeaderValue::from_str(&st.auth.cookie(&id))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Logs out: the session ends and its cookie is cleared.
#[utoipa::path(post, path = "/api/logout", tag = "session",
    responses((status = 204, description = "Logged out"), (status = 401, body = ErrorBody)))]
async fn logout(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    if let Some(id) = auth::session_cookie(req.headers()) {
        st.auth.close_session(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = HeaderValue::from_str(&st.auth.expired_cookie())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Who the credentials belong to.
#[utoipa::path(get, path = "/api/session", tag = "session",
    responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
async fn session(Extension(admin): Extension<Admin>) -> Json<SessionInfo> {
    Json(SessionInfo { name: admin.0 })
}

/// The current registrations.
#[utoipa::path(get, path = "/api/registrations", tag = "registrations",
    responses((status = 200, body = [Registration]), (status = 401, body = ErrorBody)))]
async fn list_registrations(
    State(st): State<AppState>,
) -> Result<Json<Vec<Registration>>, ApiError> {
    blocking(&st.ops, |ops| ops.registrations()).await.map(Json)
}

/// Removes one registration; calls to that contact stop at once.
#[utoipa::path(delete, path = "/api/registrations/{id}", tag = "registrations",
    params(("id" = String, Path, description = "The registration's id, from the list")),
    responses(
        (status = 200, description = "Removed; what it was", body = Registration),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No registration with that id", body = ErrorBody),
        (status = 503, description = "The SIP side did not answer in time", body = ErrorBody),
    ))]
async fn delete_registration(
    State(st): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Registration>, ApiError> {
    let removed = blocking(&st.ops, move |ops| ops.remove_registration(&id)).await?;
    tracing::info!(admin = %admin.0, aor = %removed.aor, contact = %removed.contact, "admin API: registration removed");
    Ok(Json(removed))
}

/// Every user, by name.
#[utoipa::path(get, path = "/api/users", tag = "users",
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody)))]
async fn list_users(State(st): State<AppState>) -> Result<Json<Vec<UserView>>, ApiError> {
    blocking(&st.ops, |ops| ops.users()).await.map(Json)
}

/// One user.
#[utoipa::path(get, path = "/api/users/{name}", tag = "users",
    params(("name" = String, Path, description = "The user name")),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_user(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    blocking(&st.ops, move |ops| ops.user(&name))
        .await
        .map(Json)
}

/// Adds a user, who may register at once.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, description = "Added", body = UserView),
        (status = 400, description = "A field is wrong (named in the error)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "The name or extension is taken", body = ErrorBody),
    ))]
async fn add_user(
    State(st): State<AppState>,
    Extension(admin): Extension<Admin>,
    JsonBody(user): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let added = blocking(&st.ops, move |ops| ops.add_user(&user)).await?;
    tracing::info!(admin = %admin.0, user = %added.name, "admin API: user added");
    Ok((StatusCode::CREATED, Json(added)))
}

/// Changes a user's password or extension (`"extension": null` takes it away).
#[utoipa::path(patch, path = "/api/users/{name}", tag = "users", request_body = UserChange,
    params(("name" = String, Path, description = "The user name")),
    responses(
        (status = 200, description = "Changed", body = UserView),
        (status = 400, description = "A field is wrong (named in the error)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The extension is taken", body = ErrorBody),
    ))]
async fn change_user(
    State(st): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<UserChange>,
) -> Result<Json<UserView>, ApiError> {
    let changed = blocking(&st.ops, move |ops| ops.change_user(&name, &change)).await?;
    tracing::info!(admin = %admin.0, user = %changed.name, "admin API: user changed");
    Ok(Json(changed))
}

/// Removes a user. Their registrations stay until they expire, but new ones and calls
/// from them are refused.
#[utoipa::path(delete, path = "/api/users/{name}", tag = "users",
    params(("name" = String, Path, description = "The user name")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn remove_user(
    State(st): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let who = name.clone();
    blocking(&st.ops, move |ops| ops.remove_user(&name)).await?;
    tracing::info!(admin = %admin.0, user = %who, "admin API: user removed");
    Ok(StatusCode::NO_CONTENT)
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document"), (status = 401, body = ErrorBody)))]
async fn openapi_doc(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.openapi.as_ref().clone(),
    )
        .into_response()
}

/// Prometheus metrics, in the text format.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Metrics in the Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let failures = st
        .auth
        .failed_total
        .load(std::sync::atomic::Ordering::Relaxed);
    let text = blocking(&st.ops, move |ops| {
        let sip = ops.sip_figures()?;
        crate::metrics::render(&sip, failures)
            .map_err(|e| OpError::new(crate::ErrorKind::Internal, None, e))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Declares the two ways in: the bearer token and the session cookie.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::COOKIE))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard admin API",
        description = "Registrations, users and metrics of a Switchboard SIP server. \
            Log in with POST /api/login (a session cookie) or send \
            `Authorization: Bearer TOKEN` (`switchboard admin token NAME` makes one). \
            Every error is `{\"error\": {\"code\", \"field\", \"message\"}}`."
    ),
    paths(login, logout, session, list_registrations, delete_registration, list_users,
        get_user, add_user, change_user, remove_user, openapi_doc, metrics),
    components(schemas(Registration, UserView, ForwardingView, NewUser, UserChange,
        ErrorBody, ErrorDetail, LoginRequest, SessionInfo)),
    modifiers(&Security),
    security(("bearer" = []), ("cookie" = [])),
)]
struct ApiDoc;

/// The OpenAPI document of the API, as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::{ErrorKind, NewUser, SipFigures};
    use axum::body::Body;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// Operations over a list of users in memory, with one administrator and token.
    struct Fake {
        users: Mutex<Vec<String>>,
        hash: String,
    }

    impl Operations for Fake {
        fn registrations(&self) -> Result<Vec<Registration>, OpError> {
            Ok(Vec::new())
        }
        fn remove_registration(&self, id: &str) -> Result<Registration, OpError> {
            Err(OpError::new(
                ErrorKind::NotFound,
                Some("id"),
                format!("no {id}"),
            ))
        }
        fn users(&self) -> Result<Vec<UserView>, OpError> {
            Ok(self.users.lock().unwrap().iter().map(|n| view(n)).collect())
        }
        fn user(&self, name: &str) -> Result<UserView, OpError> {
            Err(OpError::new(
                ErrorKind::NotFound,
                None,
                format!("no user \"{name}\""),
            ))
        }
        fn add_user(&self, user: &NewUser) -> Result<UserView, OpError> {
            if user.extension.as_deref() == Some("x") {
                return Err(OpError::new(
                    ErrorKind::Invalid,
                    Some("extension"),
                    "digits",
                ));
            }
            self.users.lock().unwrap().push(user.name.clone());
            Ok(view(&user.name))
        }
        fn change_user(&self, name: &str, _: &UserChange) -> Result<UserView, OpError> {
            Ok(view(name))
        }
        fn remove_user(&self, _: &str) -> Result<(), OpError> {
            Ok(())
        }
        fn sip_figures(&self) -> Result<SipFigures, OpError> {
            Ok(SipFigures::default())
        }
        fn admin_password_hash(&self, name: &str) -> Result<Option<String>, OpError> {
            Ok((name == "root").then(|| self.hash.clone()))
        }
        fn token_owner(&self, digest: &str) -> Result<Option<String>, OpError> {
            Ok((digest == accounts::token_digest("sbt_good")).then(|| "root".to_owned()))
        }
    }

    fn view(name: &str) -> UserView {
        UserView {
            name: name.into(),
            extension: None,
            realm: "example.test".into(),
            created_at: 0,
            forwarding: ForwardingView {
                always: None,
                busy: None,
                no_answer: None,
                no_answer_secs: 20,
                unreachable: None,
            },
        }
    }

    fn app() -> Router {
        let fake = Fake {
            users: Mutex::new(vec!["alice".into()]),
            hash: accounts::hash_password("pw").unwrap(),
        };
        router(Arc::new(fake), false)
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let mut req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        req.extensions_mut()
            .insert(Peer("192.0.2.9:40000".parse().unwrap()));
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (parts.status, parts.headers, json)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn credentials_are_needed_everywhere_but_the_login() {
        runtime().block_on(async {
            let app = app();
            let (s, h, body) = call(&app, "GET", "/api/users", &[], None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
            assert!(h.contains_key(header::WWW_AUTHENTICATE));
            assert_eq!(body["error"]["code"], "unauthenticated");
            let (s, _, _) = call(&app, "GET", "/nowhere", &[], None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
            let bearer = [("authorization", "Bearer sbt_good")];
            let (s, _, body) = call(&app, "GET", "/api/users", &bearer, None).await;
            assert_eq!(
                (s, body[0]["name"].clone()),
                (StatusCode::OK, "alice".into())
            );
            let (s, _, body) = call(&app, "GET", "/nowhere", &bearer, None).await;
            assert_eq!(
                (s, body["error"]["code"].clone()),
                (StatusCode::NOT_FOUND, "not_found".into())
            );

            let (s, h, _) = call(
                &app,
                "POST",
                "/api/login",
                &[],
                Some(r#"{"name":"root","password":"pw"}"#),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
            let cookie = h[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            let (s, _, body) =
                call(&app, "GET", "/api/session", &[("cookie", &cookie)], None).await;
            assert_eq!((s, body["name"].clone()), (StatusCode::OK, "root".into()));
        });
    }

    #[test]
    fn errors_have_one_shape_and_name_the_field() {
        runtime().block_on(async {
            let app = app();
            let bearer = [("authorization", "Bearer sbt_good")];
            let (s, _, body) = call(
                &app,
                "POST",
                "/api/users",
                &bearer,
                Some(r#"{"name":"bob","password":"p","extension":"x"}"#),
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            assert_eq!(body["error"]["field"], "extension");
            let (s, _, body) = call(
                &app,
                "POST",
                "/api/users",
                &bearer,
                Some(r#"{"name":"bob"}"#),
            )
            .await;
            assert_eq!(
                (s, body["error"]["field"].clone()),
                (StatusCode::BAD_REQUEST, "password".into())
            );
            let (s, _, body) = call(
                &app,
                "POST",
                "/api/users",
                &bearer,
                Some(r#"{"name":"bob","password":"p"}"#),
            )
            .await;
            assert_eq!(
                (s, body["name"].clone()),
                (StatusCode::CREATED, "bob".into())
            );
            let (s, _, body) = call(&app, "DELETE", "/api/registrations/abc", &bearer, None).await;
            assert_eq!(
                (s, body["error"]["field"].clone()),
                (StatusCode::NOT_FOUND, "id".into())
            );
        });
    }

    #[test]
    fn the_openapi_document_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        for path in [
            "/api/login",
            "/api/users/{name}",
            "/api/registrations/{id}",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        assert_eq!(
            doc["paths"]["/api/login"]["post"]["security"],
            serde_json::json!([{}])
        );
    }
}
