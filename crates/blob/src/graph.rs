//! The Graph call model: `call`, `participant`, `commsNotifications` and the types they contain.
//!
//! Every object is lossless (see [`crate::Maybe`] and the `extra` member of each type): parsing a document and
//! serializing it again gives an equal JSON value, whatever members or `@odata.type` values Graph adds. Polymorphic
//! members (`mediaConfig`, `meetingInfo`) are one type holding the members of every variant; `kind()` tells which
//! variant the `@odata.type` names. `resourceData` of a notification stays JSON and is typed on demand by
//! [`CommsNotification::resources`], so a notification about a resource this version does not know still round-trips.

use serde_json::Value;

use crate::error::BlobError;
use crate::macros::{model_object, string_enum};
use crate::maybe::Maybe;

/// `@odata.type` of a call.
pub const ODATA_CALL: &str = "#microsoft.graph.call";
/// `@odata.type` of a participant.
pub const ODATA_PARTICIPANT: &str = "#microsoft.graph.participant";
/// `@odata.type` of a participantInfo.
pub const ODATA_PARTICIPANT_INFO: &str = "#microsoft.graph.participantInfo";
/// `@odata.type` of an invitationParticipantInfo.
pub const ODATA_INVITATION_PARTICIPANT_INFO: &str = "#microsoft.graph.invitationParticipantInfo";
/// `@odata.type` of an identitySet.
pub const ODATA_IDENTITY_SET: &str = "#microsoft.graph.identitySet";
/// `@odata.type` of an identity.
pub const ODATA_IDENTITY: &str = "#microsoft.graph.identity";
/// `@odata.type` of a chatInfo.
pub const ODATA_CHAT_INFO: &str = "#microsoft.graph.chatInfo";
/// `@odata.type` of an organizerMeetingInfo.
pub const ODATA_ORGANIZER_MEETING_INFO: &str = "#microsoft.graph.organizerMeetingInfo";
/// `@odata.type` of a tokenMeetingInfo.
pub const ODATA_TOKEN_MEETING_INFO: &str = "#microsoft.graph.tokenMeetingInfo";
/// `@odata.type` of a joinMeetingIdMeetingInfo.
pub const ODATA_JOIN_MEETING_ID_MEETING_INFO: &str = "#microsoft.graph.joinMeetingIdMeetingInfo";
/// `@odata.type` of a serviceHostedMediaConfig.
pub const ODATA_SERVICE_HOSTED_MEDIA_CONFIG: &str = "#microsoft.graph.serviceHostedMediaConfig";
/// `@odata.type` of an appHostedMediaConfig.
pub const ODATA_APP_HOSTED_MEDIA_CONFIG: &str = "#microsoft.graph.appHostedMediaConfig";
/// `@odata.type` of a mediaStream.
pub const ODATA_MEDIA_STREAM: &str = "#microsoft.graph.mediaStream";
/// `@odata.type` of a commsNotifications envelope.
pub const ODATA_COMMS_NOTIFICATIONS: &str = "#microsoft.graph.commsNotifications";
/// `@odata.type` of one commsNotification.
pub const ODATA_COMMS_NOTIFICATION: &str = "#microsoft.graph.commsNotification";

string_enum! {
    /// `call.state`.
    CallState {
        /// An incoming call the bot may answer.
        Incoming = "incoming",
        /// The call is being set up.
        Establishing = "establishing",
        /// The callee is ringing.
        Ringing = "ringing",
        /// Media flows.
        Established = "established",
        /// On hold.
        Hold = "hold",
        /// Being transferred.
        Transferring = "transferring",
        /// The transfer was accepted.
        TransferAccepted = "transferAccepted",
        /// Being redirected.
        Redirecting = "redirecting",
        /// Being torn down.
        Terminating = "terminating",
        /// Ended.
        Terminated = "terminated",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

string_enum! {
    /// `call.direction`.
    CallDirection {
        /// The call came to the bot.
        Incoming = "incoming",
        /// The bot placed the call.
        Outgoing = "outgoing",
    }
}

string_enum! {
    /// A value of `requestedModalities` / `activeModalities` and of `mediaStream.mediaType`.
    Modality {
        /// Unknown modality.
        Unknown = "unknown",
        /// Audio.
        Audio = "audio",
        /// Video.
        Video = "video",
        /// Video-based screen sharing.
        VideoBasedScreenSharing = "videoBasedScreenSharing",
        /// Data.
        Data = "data",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

string_enum! {
    /// `mediaStream.direction`.
    MediaDirection {
        /// No media.
        Inactive = "inactive",
        /// The participant only sends.
        SendOnly = "sendOnly",
        /// The participant only receives.
        ReceiveOnly = "receiveOnly",
        /// Both ways.
        SendReceive = "sendReceive",
    }
}

string_enum! {
    /// `commsNotification.changeType`.
    ChangeType {
        /// The resource was created.
        Created = "created",
        /// The resource was updated.
        Updated = "updated",
        /// The resource was deleted.
        Deleted = "deleted",
    }
}

model_object! {
    /// `identity`: a user, application, device, guest or phone.
    Identity {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Display name.
        display_name: String = "displayName",
        /// Unique id (for a phone: the number).
        id: String = "id",
        /// Tenant of the identity.
        tenant_id: String = "tenantId",
    }
}

model_object! {
    /// `identitySet`: who a participant is.
    IdentitySet {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// A user.
        user: Identity = "user",
        /// An application (a bot).
        application: Identity = "application",
        /// A device.
        device: Identity = "device",
        /// A guest: an identity the bot made up to join as a guest.
        guest: Identity = "guest",
        /// A phone number.
        phone: Identity = "phone",
        /// An application instance.
        application_instance: Identity = "applicationInstance",
        /// An encrypted identity.
        encrypted: Identity = "encrypted",
        /// An on-premises identity.
        on_premises: Identity = "onPremises",
    }
}

impl IdentitySet {
    /// The first identity present, with its kind (`user`, `application`, …), for summaries.
    pub fn primary(&self) -> Option<(&'static str, &Identity)> {
        [
            ("user", &self.user),
            ("application", &self.application),
            ("guest", &self.guest),
            ("phone", &self.phone),
            ("device", &self.device),
            ("applicationInstance", &self.application_instance),
            ("encrypted", &self.encrypted),
            ("onPremises", &self.on_premises),
        ]
        .into_iter()
        .find_map(|(kind, identity)| identity.as_ref().map(|identity| (kind, identity)))
    }

    /// An identity set holding one identity of the given kind.
    pub fn of(kind: IdentityKind, identity: Identity) -> Self {
        let mut set = IdentitySet {
            odata_type: Maybe::Value(ODATA_IDENTITY_SET.to_owned()),
            ..IdentitySet::default()
        };
        let slot = match kind {
            IdentityKind::User => &mut set.user,
            IdentityKind::Application => &mut set.application,
            IdentityKind::Guest => &mut set.guest,
            IdentityKind::Phone => &mut set.phone,
            IdentityKind::Device => &mut set.device,
        };
        *slot = Maybe::Value(identity);
        set
    }
}

/// The kinds of identity [`IdentitySet::of`] can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// A user.
    User,
    /// An application.
    Application,
    /// A guest.
    Guest,
    /// A phone.
    Phone,
    /// A device.
    Device,
}

impl Identity {
    /// An identity with `@odata.type`, id and an optional display name, members in the seed's order.
    pub fn new(id: &str, display_name: Option<&str>) -> Self {
        Identity {
            odata_type: Maybe::Value(ODATA_IDENTITY.to_owned()),
            display_name: display_name.map_or(Maybe::Absent, |name| Maybe::Value(name.to_owned())),
            id: Maybe::Value(id.to_owned()),
            ..Identity::default()
        }
    }
}

model_object! {
    /// `participantInfo`: a participant's identity and where it is.
    ParticipantInfo {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Who.
        identity: IdentitySet = "identity",
        /// `default`, `voicemail`, `skypeForBusiness`, …
        endpoint_type: String = "endpointType",
        /// Media region.
        region: String = "region",
        /// Language culture string.
        language_id: String = "languageId",
        /// ISO 3166-1 country code.
        country_code: String = "countryCode",
        /// Participant id.
        participant_id: String = "participantId",
    }
}

model_object! {
    /// `invitationParticipantInfo`: a call target.
    InvitationParticipantInfo {
        /// `@odata.type` (the seed's examples use `participantInfo` here).
        odata_type: String = "@odata.type",
        /// Who to call.
        identity: IdentitySet = "identity",
        /// Endpoint type.
        endpoint_type: String = "endpointType",
        /// Call this participant replaces.
        replaces_call_id: String = "replacesCallId",
        /// Hidden participant.
        hidden: bool = "hidden",
        /// Participant id.
        participant_id: String = "participantId",
        /// Region (present on service responses).
        region: String = "region",
        /// Language (present on service responses).
        language_id: String = "languageId",
    }
}

model_object! {
    /// `chatInfo`: the meeting chat thread.
    ChatInfo {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Thread id (`19:meeting_…@thread.v2` for scheduled meetings, `19:…@thread.skype` for channels).
        thread_id: String = "threadId",
        /// Message id (`"0"` for scheduled meetings).
        message_id: String = "messageId",
        /// Reply-chain message id.
        reply_chain_message_id: String = "replyChainMessageId",
    }
}

model_object! {
    /// `meetingInfo`: one of `organizerMeetingInfo`, `tokenMeetingInfo`, `joinMeetingIdMeetingInfo` (see `kind()`).
    MeetingInfo {
        /// `@odata.type`: which variant this is.
        odata_type: String = "@odata.type",
        /// organizerMeetingInfo: the organizer.
        organizer: IdentitySet = "organizer",
        /// organizerMeetingInfo: whether the meeting runs without its host.
        allow_conversation_without_host: bool = "allowConversationWithoutHost",
        /// tokenMeetingInfo: the meeting token.
        token: String = "token",
        /// joinMeetingIdMeetingInfo: the meeting id.
        join_meeting_id: String = "joinMeetingId",
        /// joinMeetingIdMeetingInfo: the passcode.
        passcode: Value = "passcode",
    }
}

/// An integer sent either as a JSON number or as a numeric string (`"code": "200"` appears in Graph's own
/// documentation); such members are kept as JSON so that both round-trip unchanged.
pub fn int_like(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Which variant a [`MeetingInfo`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeetingInfoKind {
    /// `organizerMeetingInfo`.
    Organizer,
    /// `tokenMeetingInfo`.
    Token,
    /// `joinMeetingIdMeetingInfo`.
    JoinMeetingId,
    /// Another or no `@odata.type`.
    Other,
}

impl MeetingInfo {
    /// The variant named by `@odata.type`.
    pub fn kind(&self) -> MeetingInfoKind {
        match self.odata_type.as_ref().map(String::as_str) {
            Some(ODATA_ORGANIZER_MEETING_INFO) => MeetingInfoKind::Organizer,
            Some(ODATA_TOKEN_MEETING_INFO) => MeetingInfoKind::Token,
            Some(ODATA_JOIN_MEETING_ID_MEETING_INFO) => MeetingInfoKind::JoinMeetingId,
            _ => MeetingInfoKind::Other,
        }
    }
}

model_object! {
    /// `mediaInfo`: a prompt the service prefetches.
    MediaInfo {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Where the audio file is.
        uri: String = "uri",
        /// Its id.
        resource_id: String = "resourceId",
    }
}

model_object! {
    /// `mediaConfig`: `serviceHostedMediaConfig` or `appHostedMediaConfig` (see `kind()`).
    MediaConfig {
        /// `@odata.type`: which variant this is.
        odata_type: String = "@odata.type",
        /// appHostedMediaConfig: the serialized media session configuration.
        blob: String = "blob",
        /// serviceHostedMediaConfig: prompts to prefetch.
        pre_fetch_media: Vec<MediaInfo> = "preFetchMedia",
        /// Leave the default audio routing group.
        remove_from_default_audio_group: bool = "removeFromDefaultAudioGroup",
    }
}

/// Which variant a [`MediaConfig`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaConfigKind {
    /// `serviceHostedMediaConfig`: Graph plays and records.
    ServiceHosted,
    /// `appHostedMediaConfig`: the bot (through a media processor) hosts the media.
    AppHosted,
    /// Another or no `@odata.type`.
    Other,
}

impl MediaConfig {
    /// A `serviceHostedMediaConfig`, with `preFetchMedia` only when prompts are given.
    pub fn service_hosted(pre_fetch_media: Vec<MediaInfo>) -> Self {
        MediaConfig {
            odata_type: Maybe::Value(ODATA_SERVICE_HOSTED_MEDIA_CONFIG.to_owned()),
            pre_fetch_media: if pre_fetch_media.is_empty() {
                Maybe::Absent
            } else {
                Maybe::Value(pre_fetch_media)
            },
            ..MediaConfig::default()
        }
    }

    /// An `appHostedMediaConfig` carrying `blob` as a JSON string.
    pub fn app_hosted(blob: String) -> Self {
        MediaConfig {
            odata_type: Maybe::Value(ODATA_APP_HOSTED_MEDIA_CONFIG.to_owned()),
            blob: Maybe::Value(blob),
            ..MediaConfig::default()
        }
    }

    /// The variant named by `@odata.type`.
    pub fn kind(&self) -> MediaConfigKind {
        match self.odata_type.as_ref().map(String::as_str) {
            Some(ODATA_SERVICE_HOSTED_MEDIA_CONFIG) => MediaConfigKind::ServiceHosted,
            Some(ODATA_APP_HOSTED_MEDIA_CONFIG) => MediaConfigKind::AppHosted,
            _ => MediaConfigKind::Other,
        }
    }

    /// Parses the blob of an `appHostedMediaConfig` found at JSON path `path`.
    pub fn media_session_config(&self, path: &str) -> Result<crate::MediaSessionConfig, BlobError> {
        let blob_path = crate::error::join_path(path, "blob");
        let Some(blob) = self.blob.as_ref() else {
            return Err(BlobError::NotAMediaSessionConfig {
                path: blob_path,
                message: "the member is missing or null".to_owned(),
            });
        };
        let value = crate::parse_json_text(blob.as_bytes()).map_err(|err| {
            BlobError::NotAMediaSessionConfig {
                path: blob_path.clone(),
                message: err.to_string(),
            }
        })?;
        crate::MediaSessionConfig::from_value_at(&blob_path, value)
    }
}

model_object! {
    /// `toneInfo`: a DTMF tone.
    ToneInfo {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Sequence id (a number; kept as JSON because documents differ).
        sequence_id: Value = "sequenceId",
        /// `tone0`…`tone9`, `star`, `pound`, `a`…`d`, `flash`.
        tone: String = "tone",
    }
}

model_object! {
    /// `resultInfo`: why something ended.
    ResultInfo {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Result code: a number, or a numeric string in some documents (see [`int_like`]).
        code: Value = "code",
        /// Sub-code (also spelled `subCode` by some documents; that spelling stays in `extra`).
        subcode: Value = "subcode",
        /// Message.
        message: String = "message",
    }
}

model_object! {
    /// `callRoute`: how a call was routed.
    CallRoute {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// `forwarded`, `lookup`, `selfFork`.
        routing_type: String = "routingType",
        /// The original target.
        original: IdentitySet = "original",
        /// The final target.
        final_target: IdentitySet = "final",
    }
}

model_object! {
    /// `mediaStream`: one stream of a participant; `sourceId` is its media source id (MSI).
    MediaStream {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// What the stream carries.
        media_type: Modality = "mediaType",
        /// Media source id.
        source_id: String = "sourceId",
        /// Direction from the participant's point of view.
        direction: MediaDirection = "direction",
        /// Muted by the server.
        server_muted: bool = "serverMuted",
        /// Label.
        label: String = "label",
    }
}

model_object! {
    /// `participant`: someone in the call, as roster notifications report them.
    Participant {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Who and where.
        info: ParticipantInfo = "info",
        /// The participant's streams with their media source ids.
        media_streams: Vec<MediaStream> = "mediaStreams",
        /// Muted by the client.
        is_muted: bool = "isMuted",
        /// Waiting in the lobby.
        is_in_lobby: bool = "isInLobby",
        /// Metadata blob.
        metadata: String = "metadata",
        /// Participant id.
        id: String = "id",
    }
}

model_object! {
    /// `call`: a create-call request body, a service call object, or a call in a notification.
    Call {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// Call id (server generated).
        id: String = "id",
        /// State (server generated).
        state: CallState = "state",
        /// Direction (server generated).
        direction: CallDirection = "direction",
        /// Where Graph posts notifications.
        callback_uri: String = "callbackUri",
        /// The caller.
        source: ParticipantInfo = "source",
        /// Whom to call (peer-to-peer and group calls).
        targets: Vec<InvitationParticipantInfo> = "targets",
        /// Modalities asked for.
        requested_modalities: Vec<Modality> = "requestedModalities",
        /// Modalities in use (server generated).
        active_modalities: Vec<Modality> = "activeModalities",
        /// Service- or app-hosted media.
        media_config: MediaConfig = "mediaConfig",
        /// Meeting chat thread (meeting joins).
        chat_info: ChatInfo = "chatInfo",
        /// Which meeting (meeting joins).
        meeting_info: MeetingInfo = "meetingInfo",
        /// Tenant.
        tenant_id: String = "tenantId",
        /// The bot's participant id (server generated).
        my_participant_id: String = "myParticipantId",
        /// Subject.
        subject: String = "subject",
        /// Routes (server generated).
        call_routes: Vec<CallRoute> = "callRoutes",
        /// Routing policies.
        routing_policies: Vec<String> = "routingPolicies",
        /// Result of the call (server generated).
        result_info: ResultInfo = "resultInfo",
        /// Last tone (server generated).
        tone_info: ToneInfo = "toneInfo",
        /// Who answered (server generated).
        answered_by: ParticipantInfo = "answeredBy",
        /// Why it ended (server generated).
        termination_reason: String = "terminationReason",
        /// Ringing timeout, 30 to 115 seconds (see [`int_like`]).
        ringing_timeout_in_seconds: Value = "ringingTimeoutInSeconds",
        /// Media state (server generated).
        media_state: Value = "mediaState",
        /// Meeting capability (server generated).
        meeting_capability: Value = "meetingCapability",
        /// Incoming context (server generated).
        incoming_context: Value = "incomingContext",
        /// Call chain id (server generated).
        call_chain_id: String = "callChainId",
        /// `@odata.context` of a service response.
        odata_context: String = "@odata.context",
    }
}

impl Call {
    /// Members the service fills in and ignores on `POST /app/calls` (the seed: "Server generated").
    /// `direction` and `tenantId` are read-only too, but the seed's own app-hosted meeting request sends them, so
    /// they are not reported.
    pub const SERVER_GENERATED: &'static [&'static str] = &[
        "id",
        "state",
        "myParticipantId",
        "activeModalities",
        "callRoutes",
        "resultInfo",
        "toneInfo",
        "answeredBy",
        "terminationReason",
        "mediaState",
        "meetingCapability",
        "incomingContext",
        "callChainId",
        "@odata.context",
    ];
}

model_object! {
    /// `commsNotifications`: the envelope Graph posts to `callbackUri`.
    CommsNotifications {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// The notifications.
        value: Vec<CommsNotification> = "value",
    }
}

model_object! {
    /// `commsNotification`: one change to a call or its participants.
    CommsNotification {
        /// `@odata.type`.
        odata_type: String = "@odata.type",
        /// What happened.
        change_type: ChangeType = "changeType",
        /// The resource path (`/app/calls/{id}` or `/app/calls/{id}/participants`).
        resource: String = "resource",
        /// The resource URL (v1.0 spelling).
        resource_url: String = "resourceUrl",
        /// The bot's callback.
        callback_uri: String = "callbackUri",
        /// One resource object or a list of them (kept as JSON; see [`CommsNotification::resources`]).
        resource_data: Value = "resourceData",
    }
}

/// A resource carried in a notification's `resourceData`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Resource {
    /// A call.
    Call(Box<Call>),
    /// A participant (roster updates).
    Participant(Box<Participant>),
    /// Anything else, kept as JSON.
    Other(Value),
}

impl CommsNotification {
    /// Types the resources in `resourceData` (one object or a list), each with its JSON path below `path`.
    pub fn resources(&self, path: &str) -> Result<Vec<(String, Resource)>, BlobError> {
        let data_path = crate::error::join_path(path, "resourceData");
        let items: Vec<(String, &Value)> = match self.resource_data.as_ref() {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{data_path}[{i}]"), item))
                .collect(),
            Some(item) => vec![(data_path, item)],
        };
        items
            .into_iter()
            .map(|(item_path, item)| {
                let resource = match item.get("@odata.type").and_then(Value::as_str) {
                    Some(ODATA_CALL) => {
                        Resource::Call(Box::new(crate::from_value_at(&item_path, item.clone())?))
                    }
                    Some(ODATA_PARTICIPANT) => Resource::Participant(Box::new(
                        crate::from_value_at(&item_path, item.clone())?,
                    )),
                    _ => Resource::Other(item.clone()),
                };
                Ok((item_path, resource))
            })
            .collect()
    }
}
