//! The control API (HTTP/JSON) and the route of the bot WebSocket. See `docs/api.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Config;
use crate::engine::{Engine, LiveSession};
use crate::health::{HealthStatus, LoadMonitor};
use crate::request::{BotKind, CreateSessionRequest, SessionPlan};

/// An API error: HTTP status, a stable machine-readable code and a sentence. Rendered as
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`invalid_body`, `unauthorized`, `not_found`, `overloaded`, ...).
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

impl ApiError {
    /// 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no session `{id}`"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// One session as the control plane knows it.
#[derive(Debug)]
pub struct SessionEntry {
    /// `mpMediaSessionId`.
    pub id: Uuid,
    /// `callId` of the blob.
    pub call_id: String,
    /// Unix time of creation, in milliseconds.
    pub created_unix_ms: u128,
    /// The bot.
    pub bot: BotKind,
    /// mpUri.
    pub mp_uri: String,
    /// The blob text.
    pub blob: String,
    /// The token the edge presents to attach.
    pub edge_token: String,
    /// The token the bot may present on the WebSocket instead of the API token.
    pub bot_token: String,
    /// Bound RTP/UDP address, if the session has one.
    pub rtp_local: Option<std::net::SocketAddr>,
    /// The bot's PCM rate.
    pub rate: mediaproc_pipeline::SampleRate,
    /// Live state shared with the media worker.
    pub live: Arc<LiveSession>,
}

impl SessionEntry {
    fn summary(&self) -> Value {
        json!({
            "sessionId": self.id,
            "callId": self.call_id,
            "bot": self.bot.name(),
            "state": self.live.state_name(),
            "mpUri": self.mp_uri,
            "createdUnixMs": self.created_unix_ms as u64,
        })
    }
}

/// Shared state of the control API.
#[derive(Debug)]
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// The control API bearer token.
    pub api_token: String,
    /// Sessions by id.
    pub sessions: Mutex<HashMap<Uuid, Arc<SessionEntry>>>,
    /// Worker load.
    pub load: Arc<LoadMonitor>,
    /// The media engine.
    pub engine: Engine,
    /// Base URL of the API as bots reach it (`http://127.0.0.1:8080`).
    pub api_base: String,
    /// Counters for `/metrics`.
    pub counters: Counters,
    /// True once shutdown began: new sessions are refused.
    pub draining: std::sync::atomic::AtomicBool,
}

/// Control-plane counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions created.
    pub sessions_created: std::sync::atomic::AtomicU64,
    /// Requests refused for a bad or missing token.
    pub unauthorized: std::sync::atomic::AtomicU64,
    /// Sessions refused because the daemon was overloaded.
    pub refused_overloaded: std::sync::atomic::AtomicU64,
}

impl AppState {
    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<SessionEntry>>> {
        // The map is only inserted into and removed from; a panic elsewhere cannot leave it half-updated.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session with this id.
    pub fn session(&self, id: &str) -> Result<Arc<SessionEntry>, ApiError> {
        let uuid = Uuid::parse_str(id).map_err(|_| ApiError::not_found(id))?;
        self.lock_sessions()
            .get(&uuid)
            .cloned()
            .ok_or_else(|| ApiError::not_found(id))
    }

    /// Removes a session from the registry (the engine has ended it or is ending it).
    pub fn forget(&self, id: Uuid) -> Option<Arc<SessionEntry>> {
        self.lock_sessions().remove(&id)
    }

    /// All sessions.
    pub fn all_sessions(&self) -> Vec<Arc<SessionEntry>> {
        let mut all: Vec<_> = self.lock_sessions().values().cloned().collect();
        all.sort_by_key(|entry| entry.created_unix_ms);
        all
    }
}

/// The router: `/v1/sessions…` behind the bearer token, `/healthz` and `/metrics` open (they disclose no session).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route(
            "/v1/sessions/{id}",
            get(show_session).delete(delete_session),
        )
        .route("/v1/sessions/{id}/media", get(bot_websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
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
            state
                .counters
                .unauthorized
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let message = if given.is_some() {
                "the bearer token is not valid"
            } else {
                "send `Authorization: Bearer <token>`"
            };
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message,
            ))
        }
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn create_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is larger than {} bytes",
                state.config.max_body_bytes
            ),
        ),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    })?;
    let plan = CreateSessionRequest::parse(&body)?.into_plan()?;
    let (entry, body) = open_session(&state, plan).await?;
    let id = entry.id;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/sessions/{id}"))],
        Json(body),
    )
        .into_response())
}

/// Creates a session from a validated plan: checks capacity and health, builds the blob, starts the media, registers
/// the session. Returns the entry and the `201` body. Used by `POST /v1/sessions` and by in-process bots
/// ([`crate::RunningDaemon::open_session`]).
pub async fn open_session(
    state: &AppState,
    plan: SessionPlan,
) -> Result<(Arc<SessionEntry>, Value), ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is shutting down",
        ));
    }
    if state.load.status() == HealthStatus::Overloaded {
        state
            .counters
            .refused_overloaded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "media workers are overloaded; try another instance or later",
        ));
    }
    if state.lock_sessions().len() >= state.config.max_sessions {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            format!(
                "the daemon holds its maximum of {} sessions",
                state.config.max_sessions
            ),
        ));
    }

    let id = Uuid::new_v4();
    let edge_token = crate::engine::new_token();
    let bot_token = crate::engine::new_token();
    let mut spec = plan.spec.clone();
    spec.mp_uri = state.engine.mp_uri();
    spec.session_id = Some(id);
    spec.edge_token = Some(edge_token.clone());
    let config = spec
        .build()
        .map_err(|err| ApiError::bad_request("invalid_session", err.to_string()))?;
    let blob = config.to_blob();
    let media_config = serde_json::to_value(config.to_media_config()).unwrap_or(Value::Null);
    let started = state
        .engine
        .start_session(id, &plan, &config, &edge_token)
        .await?;
    let entry = Arc::new(SessionEntry {
        id,
        call_id: config.call_id.as_ref().cloned().unwrap_or_default(),
        created_unix_ms: unix_ms(),
        bot: plan.bot.clone(),
        mp_uri: spec.mp_uri.clone(),
        blob: blob.clone(),
        edge_token: edge_token.clone(),
        bot_token: bot_token.clone(),
        rtp_local: started.rtp_local,
        rate: started.rate,
        live: started.live,
    });
    state.lock_sessions().insert(id, entry.clone());
    state
        .counters
        .sessions_created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(session = %id, bot = plan.bot.name(), rtp = ?entry.rtp_local, "session created");

    let ws_base = state.api_base.replacen("http", "ws", 1);
    let mut body = json!({
        "sessionId": id,
        "callId": entry.call_id,
        "mpUri": entry.mp_uri,
        "blob": blob,
        "mediaConfig": media_config,
        "edgeToken": edge_token,
        "botToken": bot_token,
        "mediaUrl": format!("{ws_base}/v1/sessions/{id}/media"),
        "certificateSha256": state.engine.fingerprint_hex(),
    });
    if let Some(local) = entry.rtp_local {
        body["rtp"] = json!({"local": local.to_string()});
    }
    Ok((entry, body))
}

async fn list_sessions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let sessions: Vec<Value> = state
        .all_sessions()
        .iter()
        .map(|entry| entry.summary())
        .collect();
    Ok(Json(json!({"sessions": sessions})))
}

async fn show_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let entry = state.session(&id)?;
    let mut body = entry.summary();
    body["blob"] = entry.blob.clone().into();
    if let Some(local) = entry.rtp_local {
        body["rtp"] = json!({"local": local.to_string()});
    }
    body["participants"] = entry.live.participants_json();
    body["stats"] = entry.live.stats_json();
    Ok(Json(body))
}

async fn delete_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    let entry = state.session(&id)?;
    state.forget(entry.id);
    state.engine.end_session(entry.id).await;
    tracing::info!(session = %entry.id, "session deleted");
    Ok(StatusCode::NO_CONTENT)
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
    let entry = match state.session(&id) {
        Ok(entry) => Some(entry),
        Err(err) if api_token_given => return Err(err),
        Err(_) => None,
    };
    let allowed = api_token_given
        || entry
            .as_ref()
            .zip(given.as_deref())
            .is_some_and(|(entry, token)| tokens_equal(token, &entry.bot_token));
    let Some(entry) = entry.filter(|_| allowed) else {
        state
            .counters
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the API token or the session's botToken (Authorization: Bearer, or ?token=)",
        ));
    };
    if entry.bot != BotKind::WebSocket {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_a_websocket_session",
            format!(
                "session `{id}` is served by the built-in `{}` bot",
                entry.bot.name()
            ),
        ));
    }
    let port = entry.live.take_bot_port().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "bot_connected",
            "a bot is already connected to this session",
        )
    })?;
    let live = entry.live.clone();
    let call_id = entry.call_id.clone();
    let rate = entry.rate;
    Ok(upgrade
        .max_message_size(crate::ws::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| crate::ws::serve_bot(socket, port, live, id, call_id, rate)))
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let loads = state.load.loads();
    Json(json!({
        "status": state.load.status(),
        "sessions": state.lock_sessions().len(),
        "workers": loads.len(),
        "workerLoad": loads,
        "lateTicks": state.load.late_ticks().iter().sum::<u64>(),
        "draining": state.draining.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = crate::metrics::render(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
