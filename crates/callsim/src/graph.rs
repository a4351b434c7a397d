//! The Graph calls emulator: `POST /{v1.0,beta}/app/calls` answers like Graph (201 + call object, then
//! `commsNotifications` to the call's `callbackUri`), `GET` shows a call, `DELETE` ends it. For app-hosted media it
//! starts the media edge ([`crate::edge`]) once the call is established.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mediaproc_blob::{
    Call, Document, MediaConfigKind, Scenario, Severity, parse_document, validate_call_request,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::edge::{EdgeLive, EdgeOptions, EdgeReport, EdgeTarget, FIRST_MSI, run_edge};
use crate::error::CallsimError;

/// The application identity the emulator puts in `source` (the seed's values by default).
#[derive(Debug, Clone)]
pub struct AppIdentity {
    /// Application (client) id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Tenant.
    pub tenant_id: String,
}

impl Default for AppIdentity {
    fn default() -> Self {
        AppIdentity {
            id: "2891555a-92ff-42e6-80fa-6e1300c6b5c6".into(),
            display_name: "Calling Bot".into(),
            tenant_id: "aa67bd4c-8475-432d-bd41-39f255720e0a".into(),
        }
    }
}

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The bearer token requests must carry.
    pub token: String,
    /// The bearer token put on notifications to the callback.
    pub callback_token: String,
    /// The calling application.
    pub app: AppIdentity,
    /// Delay between `establishing` and `established`.
    pub establish_delay: Duration,
    /// How long a guest waits in the lobby before being admitted.
    pub lobby_delay: Duration,
    /// Media edge settings for app-hosted calls; `None` = no media (signalling only).
    pub edge: Option<EdgeOptions>,
}

impl GraphConfig {
    /// Defaults for local development: short delays, three participants on the edge.
    pub fn new(bind: SocketAddr, token: impl Into<String>, edge: Option<EdgeOptions>) -> Self {
        GraphConfig {
            bind,
            token: token.into(),
            callback_token: "callsim-callback-token".into(),
            app: AppIdentity::default(),
            establish_delay: Duration::from_millis(200),
            lobby_delay: Duration::from_secs(2),
            edge,
        }
    }
}

/// An emulated call.
#[derive(Debug)]
pub struct CallRecord {
    /// The call object as last reported.
    pub call: Value,
    /// The bot's callback.
    pub callback: String,
    /// The edge's live counters (app-hosted calls).
    pub edge: Option<Arc<EdgeLive>>,
    /// The edge's report once it finished.
    pub report: Option<EdgeReport>,
    /// The notifications sent, in order (for tests and the demo).
    pub notifications: Vec<Value>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Shared state of the emulator.
#[derive(Debug)]
pub struct Emulator {
    config: GraphConfig,
    base: String,
    calls: Mutex<HashMap<String, CallRecord>>,
    http: reqwest::Client,
}

impl Emulator {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallRecord>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notifications sent for a call so far.
    pub fn notifications(&self, id: &str) -> Vec<Value> {
        self.lock()
            .get(id)
            .map(|c| c.notifications.clone())
            .unwrap_or_default()
    }

    /// The edge's live counters of a call.
    pub fn edge_live(&self, id: &str) -> Option<Arc<EdgeLive>> {
        self.lock().get(id).and_then(|c| c.edge.clone())
    }

    /// The edge's report of a call, once its media ended.
    pub fn edge_report(&self, id: &str) -> Option<EdgeReport> {
        self.lock().get(id).and_then(|c| c.report.clone())
    }
}

/// A running emulator.
#[derive(Debug)]
pub struct RunningGraph {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (calls, notifications, edge reports).
    pub emulator: Arc<Emulator>,
    server: tokio::task::JoinHandle<()>,
}

impl RunningGraph {
    /// Stops the server and every call's task.
    pub fn stop(self) {
        self.server.abort();
        for record in self.emulator.lock().values_mut() {
            if let Some(task) = record.task.take() {
                task.abort();
            }
        }
    }
}

/// Starts the emulator.
pub async fn start(config: GraphConfig) -> Result<RunningGraph, CallsimError> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| CallsimError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CallsimError::Bind {
        addr: config.bind,
        source,
    })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| CallsimError::Media(format!("http client: {err}")))?;
    let emulator = Arc::new(Emulator {
        config,
        base: format!("http://{addr}"),
        calls: Mutex::new(HashMap::new()),
        http,
    });
    let app = Router::new()
        .route("/{version}/app/calls", post(create_call))
        .route(
            "/{version}/app/calls/{id}",
            get(get_call).delete(delete_call),
        )
        .fallback(|| async {
            graph_error(
                StatusCode::NOT_FOUND,
                "UnknownError",
                "no such resource".into(),
                None,
            )
        })
        .with_state(emulator.clone());
    let server = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("graph emulator stopped: {err}");
        }
    });
    Ok(RunningGraph {
        addr,
        emulator,
        server,
    })
}

/// Graph's error shape: `{"error": {"code", "message", "innerError": {"request-id", ...}}}`.
fn graph_error(
    status: StatusCode,
    code: &str,
    message: String,
    details: Option<Value>,
) -> Response {
    let mut inner = json!({"request-id": Uuid::new_v4()});
    if let Some(details) = details {
        inner["details"] = details;
    }
    (
        status,
        Json(json!({"error": {"code": code, "message": message, "innerError": inner}})),
    )
        .into_response()
}

/// Checks the bearer token; the error is the response to send (boxed: responses are large).
fn authorized(emulator: &Emulator, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if token == emulator.config.token => Ok(()),
        _ => Err(Box::new(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty or invalid.".into(),
            None,
        ))),
    }
}

fn valid_version(version: &str) -> Result<(), Box<Response>> {
    if version == "v1.0" || version == "beta" {
        Ok(())
    } else {
        Err(Box::new(graph_error(
            StatusCode::NOT_FOUND,
            "BadRequest",
            format!("Invalid version: {version}"),
            None,
        )))
    }
}

/// Callbacks: `https` everywhere, plain `http` only to loopback (local development), as Graph requires https.
fn callback_allowed(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    lower.starts_with("https://")
        || ["http://127.", "http://localhost", "http://[::1]"]
            .iter()
            .any(|prefix| lower.starts_with(prefix))
}

async fn create_call(
    State(emulator): State<Arc<Emulator>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = authorized(&emulator, &headers).and_then(|()| valid_version(&version)) {
        return *response;
    }
    let call = match parse_document(&body) {
        Ok(Document::Call(call)) => *call,
        Ok(other) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "Expected a #microsoft.graph.call, got a {}",
                    other.kind().as_str()
                ),
                None,
            );
        }
        Err(err) => {
            return graph_error(StatusCode::BAD_REQUEST, "BadRequest", err.to_string(), None);
        }
    };
    let problems: Vec<_> = validate_call_request(&call, None)
        .into_iter()
        .filter(|p| {
            p.severity == Severity::Error
                && !(p.path == "callbackUri"
                    && call
                        .callback_uri
                        .as_ref()
                        .is_some_and(|u| callback_allowed(u)))
        })
        .collect();
    if let Some(first) = problems.first() {
        let details: Vec<Value> = problems
            .iter()
            .map(|p| json!({"target": p.path, "message": p.message}))
            .collect();
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("{}: {}", first.path, first.message),
            Some(json!(details)),
        );
    }
    let callback = call.callback_uri.as_ref().cloned().unwrap_or_default();
    if !callback_allowed(&callback) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "callbackUri must be https".into(),
            None,
        );
    }
    let id = Uuid::new_v4().to_string();
    let response = call_object(&emulator, &call, &id, &version);
    let app_hosted = call
        .media_config
        .as_ref()
        .is_some_and(|m| m.kind() == MediaConfigKind::AppHosted);
    let edge_live =
        (app_hosted && emulator.config.edge.is_some()).then(|| Arc::new(EdgeLive::default()));
    emulator.lock().insert(
        id.clone(),
        CallRecord {
            call: response.clone(),
            callback,
            edge: edge_live.clone(),
            report: None,
            notifications: Vec::new(),
            task: None,
        },
    );
    let task = tokio::spawn(run_call(emulator.clone(), id.clone(), call, edge_live));
    if let Some(record) = emulator.lock().get_mut(&id) {
        record.task = Some(task);
    }
    let location = format!("{}/{version}/app/calls/{id}", emulator.base);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(response),
    )
        .into_response()
}

/// The `201` body: the request echoed with the service's members filled in, as the seed's responses show.
fn call_object(emulator: &Emulator, call: &Call, id: &str, version: &str) -> Value {
    let app = &emulator.config.app;
    let mut object = serde_json::to_value(call).unwrap_or_else(|_| json!({}));
    let identity = |set: &mut Value| {
        if let Some(map) = set.as_object_mut() {
            map.entry("region").or_insert(Value::Null);
            map.entry("languageId").or_insert(Value::Null);
        }
    };
    if let Some(targets) = object.get_mut("targets").and_then(Value::as_array_mut) {
        targets.iter_mut().for_each(identity);
    }
    let mut source = object.get("source").cloned().unwrap_or_else(|| {
        json!({
            "@odata.type": "#microsoft.graph.participantInfo",
            "identity": {"@odata.type": "#microsoft.graph.identitySet", "application": {
                "@odata.type": "#microsoft.graph.identity", "displayName": app.display_name, "id": app.id}},
        })
    });
    identity(&mut source);
    if let Some(chat) = object.get_mut("chatInfo").and_then(Value::as_object_mut) {
        chat.entry("replyChainMessageId").or_insert(Value::Null);
    }
    // A call always serializes to an object; anything else is returned as it is.
    let Some(map) = object.as_object_mut() else {
        return object;
    };
    map.insert("state".into(), "establishing".into());
    map.insert("direction".into(), "outgoing".into());
    map.insert("callRoutes".into(), json!([]));
    map.insert("source".into(), source);
    map.entry("targets").or_insert(json!([]));
    map.insert("activeModalities".into(), json!([]));
    map.insert("routingPolicies".into(), json!([]));
    map.insert("tenantId".into(), app.tenant_id.clone().into());
    map.insert("myParticipantId".into(), Uuid::new_v4().to_string().into());
    map.insert("id".into(), id.into());
    map.insert(
        "@odata.context".into(),
        format!("https://graph.microsoft.com/{version}/$metadata#app/calls/$entity").into(),
    );
    for member in [
        "subject",
        "terminationReason",
        "ringingTimeoutInSeconds",
        "mediaState",
        "resultInfo",
        "answeredBy",
        "chatInfo",
        "meetingInfo",
        "meetingCapability",
        "toneInfo",
    ] {
        map.entry(member).or_insert(Value::Null);
    }
    object
}

/// Builds the `commsNotifications` envelope for a call, records it and posts it to the call's callback.
async fn notify(emulator: &Emulator, id: &str, change: &str, resource: &str, data: Value) {
    let (callback, body) = {
        let mut calls = emulator.lock();
        let Some(record) = calls.get_mut(id) else {
            return;
        };
        let body = json!({
            "@odata.type": "#microsoft.graph.commsNotifications",
            "value": [{
                "@odata.type": "#microsoft.graph.commsNotification",
                "changeType": change,
                "resource": resource,
                "callbackUri": record.callback,
                "resourceData": data,
            }]
        });
        record.notifications.push(body.clone());
        (record.callback.clone(), body)
    };
    let result = emulator
        .http
        .post(&callback)
        .bearer_auth(&emulator.config.callback_token)
        .json(&body)
        .send()
        .await;
    if let Err(err) = result {
        tracing::warn!(call = id, "callback {callback} failed: {err}");
    }
}

fn call_state(id: &str, state: &str, call: &Call, meeting: bool, extra: &[(&str, Value)]) -> Value {
    let mut data = json!({"@odata.type": "#microsoft.graph.call", "state": state});
    if meeting {
        if let Some(chat) = call.chat_info.as_ref() {
            data["chatInfo"] = serde_json::to_value(chat).unwrap_or(Value::Null);
        }
        if let Some(info) = call.meeting_info.as_ref() {
            data["meetingInfo"] = serde_json::to_value(info).unwrap_or(Value::Null);
        }
    }
    for (key, value) in extra {
        data[*key] = value.clone();
    }
    data["id"] = id.into();
    data
}

fn participant(
    id: &str,
    identity_kind: &str,
    name: &str,
    identity_id: &str,
    source_id: u32,
    in_lobby: bool,
) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.participant",
        "info": {"@odata.type": "#microsoft.graph.participantInfo", "identity": {
            "@odata.type": "#microsoft.graph.identitySet",
            identity_kind: {"@odata.type": "#microsoft.graph.identity", "displayName": name, "id": identity_id}}},
        "mediaStreams": [{"@odata.type": "#microsoft.graph.mediaStream", "mediaType": "audio",
            "sourceId": source_id.to_string(), "direction": "sendReceive", "serverMuted": false}],
        "isMuted": false,
        "isInLobby": in_lobby,
        "id": id,
    })
}

/// The call's life: establishing → (lobby) → established → roster → media; ends by DELETE.
async fn run_call(
    emulator: Arc<Emulator>,
    id: String,
    call: Call,
    edge_live: Option<Arc<EdgeLive>>,
) {
    let scenario = Scenario::detect(&call);
    let meeting = scenario.is_some_and(Scenario::joins_meeting);
    let resource = format!("/app/calls/{id}");
    let app = emulator.config.app.clone();
    let my_participant = emulator
        .lock()
        .get(&id)
        .and_then(|c| c.call["myParticipantId"].as_str().map(str::to_owned))
        .unwrap_or_default();
    notify(
        &emulator,
        &id,
        "updated",
        &resource,
        call_state(&id, "establishing", &call, meeting, &[]),
    )
    .await;
    tokio::time::sleep(emulator.config.establish_delay).await;

    let participants_count = emulator.config.edge.as_ref().map_or(2, |e| e.participants);
    let bot_source_id = 10;
    let bot = |in_lobby: bool| {
        let guest = call
            .source
            .as_ref()
            .and_then(|s| s.identity.as_ref())
            .and_then(|i| i.guest.as_ref());
        match guest {
            Some(guest) => participant(
                &my_participant,
                "guest",
                guest.display_name.as_ref().map_or("Guest", String::as_str),
                guest.id.as_ref().map_or("", String::as_str),
                bot_source_id,
                in_lobby,
            ),
            None => participant(
                &my_participant,
                "application",
                &app.display_name,
                &app.id,
                bot_source_id,
                in_lobby,
            ),
        }
    };
    if scenario == Some(Scenario::GuestJoin) {
        // The guest waits in the lobby first; it sees no roster but itself until admitted.
        notify(
            &emulator,
            &id,
            "updated",
            &format!("{resource}/participants"),
            json!([bot(true)]),
        )
        .await;
        tokio::time::sleep(emulator.config.lobby_delay).await;
    }
    let established_extra: Vec<(&str, Value)> = if meeting {
        Vec::new()
    } else {
        vec![
            ("direction", "outgoing".into()),
            ("tenantId", app.tenant_id.clone().into()),
        ]
    };
    update_state(&emulator, &id, "established");
    notify(
        &emulator,
        &id,
        "updated",
        &resource,
        call_state(&id, "established", &call, meeting, &established_extra),
    )
    .await;
    if meeting {
        let mut roster: Vec<Value> = (0..participants_count)
            .map(|i| {
                participant(
                    &Uuid::new_v4().to_string(),
                    "user",
                    &format!("Participant {}", i + 1),
                    &Uuid::new_v4().to_string(),
                    FIRST_MSI + i as u32,
                    false,
                )
            })
            .collect();
        roster.push(bot(false));
        notify(
            &emulator,
            &id,
            "updated",
            &format!("{resource}/participants"),
            json!(roster),
        )
        .await;
    }
    let (Some(options), Some(live)) = (emulator.config.edge.clone(), edge_live) else {
        return;
    };
    let Some(blob) = call
        .media_config
        .as_ref()
        .and_then(|m| m.media_session_config("mediaConfig").ok())
    else {
        tracing::warn!(call = %id, "app-hosted call without a usable blob: no media");
        return;
    };
    let report = match EdgeTarget::from_blob(&blob).await {
        Ok(target) => run_edge(target, options, live).await,
        Err(err) => Err(err),
    };
    match report {
        Ok(report) => {
            if let Some(record) = emulator.lock().get_mut(&id) {
                record.report = Some(report);
            }
        }
        Err(err) => tracing::warn!(call = %id, "media edge: {err}"),
    }
}

fn update_state(emulator: &Emulator, id: &str, state: &str) {
    if let Some(record) = emulator.lock().get_mut(id) {
        record.call["state"] = state.into();
    }
}

async fn get_call(
    State(emulator): State<Arc<Emulator>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorized(&emulator, &headers).and_then(|()| valid_version(&version)) {
        return *response;
    }
    match emulator.lock().get(&id) {
        Some(record) => Json(record.call.clone()).into_response(),
        None => graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            format!("Call {id} not found"),
            None,
        ),
    }
}

async fn delete_call(
    State(emulator): State<Arc<Emulator>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorized(&emulator, &headers).and_then(|()| valid_version(&version)) {
        return *response;
    }
    let task = match emulator.lock().get_mut(&id) {
        Some(record) if record.call["state"] != "terminated" => {
            record.call["state"] = "terminated".into();
            record.task.take()
        }
        _ => {
            return graph_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                format!("Call {id} not found"),
                None,
            );
        }
    };
    if let Some(task) = task {
        task.abort();
    }
    let data = json!({
        "@odata.type": "#microsoft.graph.call",
        "state": "terminated",
        "resultInfo": {"@odata.type": "#microsoft.graph.resultInfo", "code": 200, "subcode": 5001, "message": "The conversation has ended."},
        "id": id,
    });
    let emulator2 = emulator.clone();
    tokio::spawn(async move {
        notify(
            &emulator2,
            &id,
            "deleted",
            &format!("/app/calls/{id}"),
            data,
        )
        .await
    });
    StatusCode::NO_CONTENT.into_response()
}
