//! The control API (HTTP/JSON) and the route of the bot WebSocket. See `docs/api.md`.
//!
//! This is the top layer: the only place a [`DaemonError`] becomes an HTTP status and a stable code. It runs its
//! own accept loop ([`serve`]) rather than `axum::serve`, to defend the port: at most `http_max_connections`
//! connections (more are closed at accept and counted), request headers within `http_header_timeout_ms` (hyper's
//! header-read timeout: a slow-header client is closed), the bearer token checked before a body is read, and an
//! authorised body within `http_body_timeout_ms`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::engine::{Engine, SessionEntry};
use crate::error::DaemonError;
use crate::fleet::{Drain, Fleet, Forwarded, Placed};
use crate::metrics::HttpCounters;
use crate::request::{BotKind, CreateSessionRequest, UpdateSessionRequest};
use crate::session::{BotPort, LiveSession};

/// An API error: a [`DaemonError`] with its HTTP status and stable code. Rendered as
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError(pub DaemonError);

impl From<DaemonError> for ApiError {
    fn from(err: DaemonError) -> Self {
        ApiError(err)
    }
}

impl ApiError {
    /// The HTTP status, the stable code and the message. This is the only place that maps errors to HTTP.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        let (status, code) = match &self.0 {
            DaemonError::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            DaemonError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            DaemonError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            DaemonError::InvalidSession(_) => (StatusCode::BAD_REQUEST, "invalid_session"),
            DaemonError::InvalidBot(_) => (StatusCode::BAD_REQUEST, "invalid_bot"),
            DaemonError::RtpBind(_) => (StatusCode::BAD_REQUEST, "rtp_bind_failed"),
            DaemonError::CodecNotSupported(_) => {
                (StatusCode::NOT_IMPLEMENTED, "codec_not_supported")
            }
            DaemonError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            DaemonError::SessionNotFound(_) | DaemonError::RouteNotFound => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            DaemonError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            DaemonError::BotConnected => (StatusCode::CONFLICT, "bot_connected"),
            DaemonError::NotAWebSocketSession { .. } => {
                (StatusCode::CONFLICT, "not_a_websocket_session")
            }
            DaemonError::InvalidSdp(_) => (StatusCode::BAD_REQUEST, "invalid_sdp"),
            DaemonError::NoOpus(_) => (StatusCode::NOT_ACCEPTABLE, "no_opus"),
            DaemonError::TooManyPeers { .. } | DaemonError::NoWebRtcPort(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_webrtc_peers")
            }
            DaemonError::WebRtcNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            DaemonError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            DaemonError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            // Fleet (issue 12).
            DaemonError::FleetUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "fleet_unavailable")
            }
            DaemonError::SessionLost { .. } => (StatusCode::GONE, "session_lost"),
            DaemonError::TooManySessions { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions")
            }
            DaemonError::Media(_)
            | DaemonError::Config(_)
            | DaemonError::Bind { .. }
            | DaemonError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "media_error"),
        };
        let message = match &self.0 {
            // The engine's own words, without the `media: ` of the daemon-level text.
            DaemonError::Media(message) => message.clone(),
            other => other.to_string(),
        };
        (status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = json!({"error": {"code": code, "message": message}});
        (status, Json(body)).into_response()
    }
}

fn summary(entry: &SessionEntry) -> Value {
    json!({
        "sessionId": entry.id,
        "callId": entry.call_id,
        "bot": entry.bot.name(),
        "state": entry.live.state_name(),
        "mpUri": entry.mp_uri,
        "createdUnixMs": entry.created_unix_ms,
    })
}

/// Shared state of the control API.
#[derive(Debug)]
pub struct AppState {
    /// The control API bearer token.
    pub api_token: String,
    /// The media engine, which holds the sessions.
    pub engine: Engine,
    /// Base URL of the API as bots reach it (`http://127.0.0.1:8080`).
    pub api_base: String,
    /// Counters of the HTTP front, for `/metrics`.
    pub http: HttpCounters,
    /// The fleet this node belongs to, if any (issue 12; `crate::fleet`).
    pub fleet: Option<Arc<Fleet>>,
    /// Drain and undrain (issue 12).
    pub drain: Arc<Drain>,
}

/// The router: `/v1/sessions…` behind the bearer token, `/healthz` and `/metrics` open (they disclose no session).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.engine.config().max_body_bytes;
    Router::new()
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route(
            "/v1/sessions/{id}",
            get(show_session)
                .patch(update_session)
                .delete(delete_session),
        )
        .route("/v1/sessions/{id}/media", get(bot_websocket))
        .route("/v1/sessions/{id}/webrtc", post(webrtc_offer))
        .route("/v1/sessions/{id}/webrtc/{resource}", delete(webrtc_delete))
        .route("/talk", get(talk_page))
        .route("/v1/talk/sessions", post(talk_create))
        .route("/v1/talk/sessions/{id}", get(talk_show).delete(talk_delete))
        .route("/healthz", get(healthz))
        // Fleet (issue 12): node-to-node routes behind the fleet secret, drain, the two health probes.
        .route(
            "/v1/fleet/sessions/{id}",
            post(fleet_create).get(fleet_show).delete(fleet_delete),
        )
        .route("/v1/fleet/nodes", get(fleet_nodes))
        .route("/v1/drain", post(drain_start))
        .route("/v1/undrain", post(drain_stop))
        .route("/health/live", get(health_live))
        .route("/health/ready", get(health_ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(DaemonError::RouteNotFound) })
        .method_not_allowed_fallback(|| async { ApiError(DaemonError::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Constant-time comparison, so response timing does not reveal how much of a token matched.
fn tokens_equal(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer(headers) {
        Some(token) if tokens_equal(token, &state.api_token) => Ok(()),
        given => {
            state.http.unauthorized.fetch_add(1, Ordering::Relaxed);
            let message = if given.is_some() {
                "the bearer token is not valid"
            } else {
                "send `Authorization: Bearer <token>`"
            };
            Err(ApiError(DaemonError::Unauthorized(message)))
        }
    }
}

async fn create_session(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    // The token before the body: a stranger cannot make the daemon buffer (or wait for) anything.
    authorize(&state, request.headers())?;
    let body = read_body(&state, request).await?;
    let plan = CreateSessionRequest::parse(&body)?.into_plan()?;
    // Fleet (issue 12): the registry picks the node; another node's answer passes through.
    let entry = match &state.fleet {
        None => state.engine.open_session(plan).await?,
        Some(fleet) => {
            // A draining node still places elsewhere, never here.
            match fleet.place(&body, state.engine.draining()).await? {
                Placed::Remote(answer) => return Ok(forwarded_response(answer)),
                Placed::Here { id, reserved } => {
                    match state.engine.open_session_as(plan, id).await {
                        Ok(entry) => entry,
                        Err(err) => {
                            if reserved {
                                fleet.forget_here(&id.to_string()).await;
                            }
                            return Err(err.into());
                        }
                    }
                }
            }
        }
    };
    let id = entry.id;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/sessions/{id}"))],
        Json(created_body(&state, &entry)),
    )
        .into_response())
}

/// Reads a request body within the size limit and the body timeout (call after the token check).
async fn read_body(state: &Arc<AppState>, request: Request) -> Result<Bytes, DaemonError> {
    let limit = state.engine.config().max_body_bytes;
    let timeout = Duration::from_millis(state.engine.config().http_body_timeout_ms);
    tokio::time::timeout(timeout, Bytes::from_request(request, state))
        .await
        .map_err(|_| DaemonError::BodyTimeout(timeout))?
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) => DaemonError::BodyTooLarge { limit },
            other => DaemonError::InvalidBody(other.body_text()),
        })
}

/// The `201` body of a new session.
pub fn created_body(state: &AppState, entry: &SessionEntry) -> Value {
    let ws_base = state.api_base.replacen("http", "ws", 1);
    let id = entry.id;
    let mut body = json!({
        "sessionId": id,
        "callId": entry.call_id,
        "mpUri": entry.mp_uri,
        "blob": entry.blob,
        "mediaConfig": entry.media_config,
        "edgeToken": entry.edge_token,
        "botToken": entry.bot_token,
        "mediaUrl": format!("{ws_base}/v1/sessions/{id}/media"),
        "certificateSha256": state.engine.fingerprint_hex(),
    });
    if let Some(local) = entry.rtp_local {
        body["rtp"] = json!({"local": local.to_string()});
    }
    body
}

async fn list_sessions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let sessions: Vec<Value> = state
        .engine
        .sessions()
        .iter()
        .map(|entry| summary(entry))
        .collect();
    Ok(Json(json!({"sessions": sessions})))
}

async fn show_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    // Fleet (issue 12): a session another node holds is answered by that node.
    let entry = match (state.engine.session(&id), &state.fleet) {
        (Ok(entry), _) => entry,
        (Err(err), None) => return Err(err.into()),
        (Err(err), Some(fleet)) => {
            return match fleet.forward(reqwest::Method::GET, &id).await? {
                Some(answer) => Ok(forwarded_response(answer)),
                None => Err(err.into()),
            };
        }
    };
    Ok(Json(session_body(&state, &entry)).into_response())
}

/// `GET /v1/sessions/{id}`'s body.
fn session_body(state: &AppState, entry: &SessionEntry) -> Value {
    let mut body = summary(entry);
    body["blob"] = entry.blob.clone().into();
    if let Some(local) = entry.rtp_local {
        body["rtp"] = json!({"local": local.to_string()});
    }
    body["participants"] = entry.live.participants_json();
    body["stats"] = entry.live.stats_json();
    body["notices"] = entry.live.notices_json();
    body["webrtc"] = state.engine.webrtc_json(entry.id);
    body
}

/// The session if `headers` carry the API token or the session's edge token; an unknown session and a wrong token
/// look the same to anyone without the API token.
fn authorize_edge(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Arc<SessionEntry>, ApiError> {
    let given = bearer(headers);
    let api = given.is_some_and(|token| tokens_equal(token, &state.api_token));
    match state.engine.session(id) {
        Ok(entry) if api || given.is_some_and(|t| tokens_equal(t, &entry.edge_token)) => Ok(entry),
        Err(err) if api => Err(err.into()),
        _ => {
            state.http.unauthorized.fetch_add(1, Ordering::Relaxed);
            Err(ApiError(DaemonError::Unauthorized(
                "send the session's edgeToken (or the API token) as `Authorization: Bearer`",
            )))
        }
    }
}

/// WHIP (RFC 9725): `POST /v1/sessions/{id}/webrtc` with an SDP offer → `201`, `Location`, the SDP answer.
async fn webrtc_offer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let entry = authorize_edge(&state, request.headers(), &id)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/sdp") {
        return Err(DaemonError::InvalidSdp(format!(
            "send the offer with `Content-Type: application/sdp` (got `{content_type}`)"
        ))
        .into());
    }
    let body = read_body(&state, request).await?;
    let offer = std::str::from_utf8(&body)
        .map_err(|e| DaemonError::InvalidSdp(format!("the offer is not UTF-8: {e}")))?;
    let (resource, answer) = state.engine.attach_webrtc(&entry, offer).await?;
    let location = format!("/v1/sessions/{}/webrtc/{resource}", entry.id);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
        ],
        answer,
    )
        .into_response())
}

/// WHIP `DELETE` on the resource: ends the peer (the session stays).
async fn webrtc_delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, resource)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let entry = authorize_edge(&state, &headers, &id)?;
    state.engine.detach_webrtc(entry.id, &resource)?;
    Ok(StatusCode::OK)
}

/// The talk page (no secrets in it: its token comes in the URL fragment, which browsers never send).
async fn talk_page(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if !state.engine.config().talk_page {
        return Err(ApiError(DaemonError::RouteNotFound));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        crate::webrtc::TALK_PAGE,
    )
        .into_response())
}

fn authorize_page(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !state.engine.config().talk_page {
        return Err(ApiError(DaemonError::RouteNotFound));
    }
    match bearer(headers) {
        Some(token) if tokens_equal(token, state.engine.page_token()) => Ok(()),
        _ => {
            state.http.unauthorized.fetch_add(1, Ordering::Relaxed);
            Err(ApiError(DaemonError::Unauthorized(
                "open the page with the URL `mediaproc demo --browser` or `serve` printed",
            )))
        }
    }
}

/// `POST /v1/talk/sessions` with the page token: a session for the page — a built-in bot (`echo`, `record`,
/// `tone`) or a WebSocket bot — answered with session-scoped tokens only.
async fn talk_create(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    authorize_page(&state, request.headers())?;
    let body = read_body(&state, request).await?;
    let plan = CreateSessionRequest::parse(&body)?.into_plan()?;
    if plan.rtp.is_some() || !matches!(plan.bot.name(), "echo" | "record" | "tone" | "websocket") {
        return Err(DaemonError::InvalidSession(
            "the talk page takes `bot`: echo, record, tone or websocket (and no `rtp`)".into(),
        )
        .into());
    }
    let entry = state.engine.open_session(plan).await?;
    let id = entry.id;
    state.engine.mark_page_session(id);
    let ws_base = state.api_base.replacen("http", "ws", 1);
    let mut body = json!({
        "sessionId": id,
        "bot": entry.bot.name(),
        "edgeToken": entry.edge_token,
        "webrtcUrl": format!("/v1/sessions/{id}/webrtc"),
    });
    if entry.bot == BotKind::WebSocket {
        body["botToken"] = entry.bot_token.clone().into();
        body["mediaUrl"] = format!("{ws_base}/v1/sessions/{id}/media").into();
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A session the talk page created, with its edge token (no other session answers here).
fn authorize_page_session(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Arc<SessionEntry>, ApiError> {
    if !state.engine.config().talk_page {
        return Err(ApiError(DaemonError::RouteNotFound));
    }
    let entry = authorize_edge(state, headers, id)?;
    if !state.engine.is_page_session(entry.id) {
        return Err(ApiError(DaemonError::SessionNotFound(id.to_owned())));
    }
    Ok(entry)
}

/// The page's live statistics, with the session's edge token.
async fn talk_show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = authorize_page_session(&state, &headers, &id)?;
    let mut body = summary(&entry);
    body["stats"] = entry.live.stats_json();
    body["notices"] = entry.live.notices_json();
    body["webrtc"] = state.engine.webrtc_json(entry.id);
    Ok(Json(body))
}

/// The page hangs up: ends its session, with the session's edge token.
async fn talk_delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let entry = authorize_page_session(&state, &headers, &id)?;
    state.engine.end_session(entry.id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /v1/sessions/{id}`: change what may change while the session runs (today: the encoder).
async fn update_session(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    authorize(&state, request.headers())?;
    let entry = state.engine.session(&id)?;
    let body = read_body(&state, request).await?;
    let update = UpdateSessionRequest::parse(&body)?;
    if let Some(encoder) = update.encoder {
        let encoder = encoder
            .into_overrides()
            .map_err(DaemonError::InvalidSession)?;
        state.engine.update_encoder(entry.id, encoder)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let entry = match (state.engine.session(&id), &state.fleet) {
        (Ok(entry), _) => entry,
        (Err(err), None) => return Err(err.into()),
        // Fleet (issue 12): the node holding the session ends it.
        (Err(err), Some(fleet)) => {
            return match fleet.forward(reqwest::Method::DELETE, &id).await? {
                Some(answer) => Ok(forwarded_response(answer)),
                None => Err(err.into()),
            };
        }
    };
    end_local(&state, &entry).await
}

/// Ends a session of this node (`DELETE`, direct or forwarded).
async fn end_local(state: &AppState, entry: &SessionEntry) -> Result<Response, ApiError> {
    // Two DELETEs at once: the one that did not remove it answers 404, as after it.
    if !state.engine.end_session(entry.id).await {
        return Err(DaemonError::SessionNotFound(entry.id.to_string()).into());
    }
    if let Some(fleet) = &state.fleet {
        fleet.forget_here(&entry.id.to_string()).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Fleet (issue 12): the forwarded answers, the node-to-node routes, drain and the probes. They live here because
// only the API may turn errors into HTTP (tests/layers.rs); the logic is in `crate::fleet`.

/// Another node's answer, passed through as it came.
fn forwarded_response(answer: Forwarded) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, answer.content_type),
        (header::LOCATION, answer.location),
    ] {
        if let Some(value) = value.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
    response
}

/// The node-to-node routes take the fleet secret, and only on a fleet node.
fn authorize_fleet<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Fleet, ApiError> {
    let Some(fleet) = state.fleet.as_deref() else {
        return Err(ApiError(DaemonError::RouteNotFound));
    };
    if bearer(headers).is_some_and(|token| fleet.secret_matches(token)) {
        return Ok(fleet);
    }
    state.http.unauthorized.fetch_add(1, Ordering::Relaxed);
    Err(ApiError(DaemonError::Unauthorized(
        "node-to-node routes take the fleet secret as `Authorization: Bearer`",
    )))
}

/// `POST /v1/fleet/sessions/{id}` (fleet secret): create the session another node placed here, with its id.
async fn fleet_create(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let fleet = authorize_fleet(&state, request.headers())?;
    let uuid = uuid::Uuid::parse_str(&id)
        .map_err(|_| DaemonError::InvalidSession(format!("`{id}` is not a session id")))?;
    let body = read_body(&state, request).await?;
    let plan = CreateSessionRequest::parse(&body)?.into_plan()?;
    let entry = match state.engine.open_session_as(plan, uuid).await {
        Ok(entry) => entry,
        Err(err) => {
            fleet.forget_here(&id).await;
            return Err(err.into());
        }
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/sessions/{id}"))],
        Json(created_body(&state, &entry)),
    )
        .into_response())
}

/// `GET /v1/fleet/sessions/{id}` (fleet secret): a session of this node, for the node that was asked.
async fn fleet_show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize_fleet(&state, &headers)?;
    let entry = state.engine.session(&id)?;
    Ok(Json(session_body(&state, &entry)))
}

/// `DELETE /v1/fleet/sessions/{id}` (fleet secret).
async fn fleet_delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize_fleet(&state, &headers)?;
    let entry = state.engine.session(&id)?;
    end_local(&state, &entry).await
}

/// `GET /v1/fleet/nodes` (API token): the fleet as the registry holds it, and this node's fleet counters.
async fn fleet_nodes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Some(fleet) = state.fleet.as_deref() else {
        return Err(ApiError(DaemonError::RouteNotFound));
    };
    let nodes: Vec<Value> = fleet
        .nodes()
        .await?
        .into_iter()
        .map(|view| {
            let mut node = serde_json::to_value(&view.record).unwrap_or(Value::Null);
            node["reserved"] = view.reserved.into();
            node
        })
        .collect();
    let c = &fleet.counters;
    let n = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    Ok(Json(json!({
        "node": fleet.node_id(),
        "registered": fleet.registered(),
        "nodes": nodes,
        "counters": {
            "placedHere": n(&c.placed_here),
            "placedRemote": n(&c.placed_remote),
            "placedLocalUnreachable": n(&c.placed_local_unreachable),
            "refused": n(&c.refused),
            "reservationsRefused": n(&c.reservations_refused),
            "remoteFailures": n(&c.remote_failures),
            "heartbeatFailures": n(&c.heartbeat_failures),
            "forwarded": n(&c.forwarded),
        },
    })))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DrainRequest {
    deadline_seconds: Option<u64>,
}

/// `POST /v1/drain` (API token), body `{"deadlineSeconds": D}` (optional): no new session here, the calls go
/// on, the process exits when the last ends or at the deadline.
async fn drain_start(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(&state, request.headers())?;
    let body = read_body(&state, request).await?;
    let drain: DrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DrainRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| DaemonError::InvalidBody(e.to_string()))?
    };
    let deadline = drain
        .deadline_seconds
        .unwrap_or(state.engine.config().fleet.drain_deadline_s);
    start_drain(&state, Duration::from_secs(deadline));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"draining": true, "deadlineSeconds": deadline, "sessions": state.engine.session_count()})),
    )
        .into_response())
}

/// Puts the node in drain (the API's `POST /v1/drain` and SIGTERM).
pub fn start_drain(state: &Arc<AppState>, deadline: Duration) {
    state.engine.set_draining(true);
    let counted = state.clone();
    state
        .drain
        .start(deadline, move || counted.engine.session_count());
    if let Some(fleet) = &state.fleet {
        fleet.beat_now();
    }
    tracing::info!(
        sessions = state.engine.session_count(),
        deadline_s = deadline.as_secs(),
        "draining: no new session; exiting when the last call ends or at the deadline"
    );
}

/// `POST /v1/undrain` (API token): takes sessions again (409 once the drain completed: the process is exiting).
async fn drain_stop(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    if !state.drain.undrain() {
        return Ok((
            StatusCode::CONFLICT,
            Json(json!({"error": {"code": "drain_complete", "message": "the drain completed; the process is exiting"}})),
        )
            .into_response());
    }
    state.engine.set_draining(false);
    if let Some(fleet) = &state.fleet {
        fleet.beat_now();
    }
    tracing::info!("undrained: taking sessions again");
    Ok(Json(json!({"draining": false})).into_response())
}

/// `/health/live`: the process answers (never depends on the registry).
async fn health_live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// `/health/ready`: serving (not draining) and, on a fleet node, registered — or configured to place locally
/// while the registry is away.
async fn health_ready(State(state): State<Arc<AppState>>) -> Response {
    let reason = if state.engine.draining() {
        Some("draining")
    } else {
        match state.fleet.as_deref() {
            Some(fleet) if !fleet.registered() && !fleet.places_locally_when_unreachable() => {
                Some("not registered with the fleet registry")
            }
            _ => None,
        }
    };
    let registered = state.fleet.as_deref().map(Fleet::registered);
    match reason {
        None => Json(json!({"ready": true, "registered": registered})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason, "registered": registered})),
        )
            .into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn bot_websocket(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let given = bearer(&headers).map(str::to_owned).or(query.token);
    let api_token_given = given
        .as_deref()
        .is_some_and(|token| tokens_equal(token, &state.api_token));
    // Without the API token, an unknown session and a wrong bot token look the same: nothing is disclosed.
    let entry = match state.engine.session(&id) {
        Ok(entry) => Some(entry),
        Err(err) if api_token_given => return Err(err.into()),
        Err(_) => None,
    };
    let allowed = api_token_given
        || entry
            .as_ref()
            .zip(given.as_deref())
            .is_some_and(|(entry, token)| tokens_equal(token, &entry.bot_token));
    let Some(entry) = entry.filter(|_| allowed) else {
        state.http.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError(DaemonError::Unauthorized(
            "send the API token or the session's botToken (Authorization: Bearer, or ?token=)",
        )));
    };
    if entry.bot != BotKind::WebSocket {
        return Err(ApiError(DaemonError::NotAWebSocketSession {
            id,
            bot: entry.bot.name(),
        }));
    }
    let port = entry
        .live
        .take_bot_port()
        .ok_or(ApiError(DaemonError::BotConnected))?;
    let mut lease = PortLease {
        port: Some(port),
        live: entry.live.clone(),
    };
    let call_id = entry.call_id.clone();
    let rate = entry.rate;
    let limits = crate::ws::WsLimits::from_config(state.engine.config());
    Ok(upgrade
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .on_upgrade(move |socket| async move {
            if let Some(port) = lease.port.take() {
                let live = lease.live.clone();
                crate::ws::serve_bot(socket, port, live, id, call_id, rate, limits).await;
            }
        }))
}

/// The bot port between the `101` answer and the upgraded connection: if the upgrade never completes (the client
/// went away), dropping the lease gives the port back so a bot can still connect.
struct PortLease {
    port: Option<BotPort>,
    live: Arc<LiveSession>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Some(port) = self.port.take() {
            self.live.return_bot_port(port);
        }
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let load = state.engine.load();
    let loads = load.loads();
    let (lateness, lateness_max, _) = load.lateness();
    let (to_worker, to_bot, to_sent) = (
        load.packet_to_worker.snapshot(),
        load.tick_to_bot.snapshot(),
        load.bot_to_sent.snapshot(),
    );
    Json(json!({
        "status": load.status(),
        "sessions": state.engine.session_count(),
        "workers": loads.len(),
        "workerPriority": state.engine.media_priority(),
        "workerLoad": loads,
        "lateTicks": load.late_ticks().iter().sum::<u64>(),
        "tickLateness": histogram_json(&lateness, lateness_max),
        "handOffs": {
            "packetToWorker": histogram_json(&to_worker.counts, to_worker.max_us),
            "tickToBot": histogram_json(&to_bot.counts, to_bot.max_us),
            "botToSent": histogram_json(&to_sent.counts, to_sent.max_us),
        },
        "draining": state.engine.draining(),
    }))
}

/// A latency histogram since the daemon began: quantiles (bucket bounds, ms) and the raw buckets, so a client can
/// take the difference of two readings (`mediaproc load` does).
fn histogram_json(counts: &[u64; crate::health::BUCKETS], max_us: u64) -> Value {
    use crate::health::{LATENESS_BUCKETS_US, lateness_quantile_us};
    let ms = |q: f64| lateness_quantile_us(counts, max_us, q).map(|us| us as f64 / 1000.0);
    json!({
        "p50Ms": ms(0.5),
        "p99Ms": ms(0.99),
        "p999Ms": ms(0.999),
        "maxMs": max_us as f64 / 1000.0,
        "bucketsUs": LATENESS_BUCKETS_US,
        "counts": counts,
    })
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let fleet = state.fleet.as_ref().map(|f| &f.counters);
    let text = crate::metrics::render(&state.engine, &state.http, fleet);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// How long [`serve`] waits for open connections to finish after it was told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the control API on `listener` until `stop` says so, then lets open requests finish (at most
/// [`SHUTDOWN_GRACE`]).
pub async fn serve(listener: TcpListener, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let config = state.engine.config();
    let max = config.http_max_connections;
    let send_buffer = config.http_send_buffer_bytes;
    let permits = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.http_header_timeout_ms));
    let service = TowerToHyperService::new(router(state.clone()));
    let mut logged_refusal = false;
    let mut logged_accept_error = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors and the like: back off a little instead of spinning, and say so once.
                if !logged_accept_error {
                    logged_accept_error = true;
                    tracing::warn!(
                        "control API accept failed (further failures are not logged): {err}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            state
                .http
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if !logged_refusal {
                logged_refusal = true;
                tracing::warn!(
                    max,
                    "control API connection cap reached; new connections are closed (counted in /metrics)"
                );
            }
            drop(stream);
            continue;
        };
        tune(&stream, send_buffer);
        state.http.connections.fetch_add(1, Ordering::Relaxed);
        state.http.connections_open.fetch_add(1, Ordering::Relaxed);
        let connection = http
            .serve_connection(TokioIo::new(stream), service.clone())
            .with_upgrades();
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                // The guard `wait_for` returns must not live across the await below (it is not `Send`).
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                if err.is_timeout() {
                    state.http.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The cap's permit goes back before the count drops: whoever sees it drop finds the slot free.
            drop(permit);
            state.http.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Every permit back means every connection finished.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max as u32)).await;
}

fn tune(stream: &TcpStream, send_buffer: usize) {
    let _ = stream.set_nodelay(true);
    if send_buffer > 0 {
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(send_buffer);
    }
}
