//! Create-call request bodies for the seed's scenarios, and the permissions each needs.

use crate::graph::{
    Call, ChatInfo, Identity, IdentityKind, IdentitySet, InvitationParticipantInfo, MediaConfig,
    MediaConfigKind, MediaInfo, MeetingInfo, Modality, ODATA_CALL, ODATA_CHAT_INFO,
    ODATA_ORGANIZER_MEETING_INFO, ODATA_PARTICIPANT_INFO, ParticipantInfo,
};
use crate::maybe::Maybe;

/// What a create-call request does (the seed's examples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The bot calls one or more users directly.
    PeerToPeer,
    /// The bot joins a scheduled meeting (`19:meeting_…@thread.v2`).
    ScheduledMeeting,
    /// The bot joins a meeting in a channel (`19:…@thread.skype`).
    ChannelMeeting,
    /// The bot joins a channel meeting as a guest identity it made up.
    GuestJoin,
}

impl Scenario {
    /// CLI spellings (`--scenario`), in the order of the variants.
    pub const NAMES: [&'static str; 4] =
        ["p2p", "scheduled-meeting", "channel-meeting", "guest-join"];

    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::PeerToPeer => "p2p",
            Scenario::ScheduledMeeting => "scheduled-meeting",
            Scenario::ChannelMeeting => "channel-meeting",
            Scenario::GuestJoin => "guest-join",
        }
    }

    /// True for the scenarios that join a meeting.
    pub fn joins_meeting(self) -> bool {
        !matches!(self, Scenario::PeerToPeer)
    }

    /// Tells the scenario of a request or service call object, if it has the members of one.
    pub fn detect(call: &Call) -> Option<Scenario> {
        let guest = call
            .source
            .as_ref()
            .and_then(|source| source.identity.as_ref())
            .is_some_and(|identity| identity.guest.is_present());
        // Service objects carry `"chatInfo": null` on peer-to-peer calls: only a value means a meeting.
        if call.meeting_info.as_ref().is_some() || call.chat_info.as_ref().is_some() {
            let thread = call
                .chat_info
                .as_ref()
                .and_then(|chat| chat.thread_id.as_ref());
            return Some(if guest {
                Scenario::GuestJoin
            } else if thread.is_some_and(|thread| thread.starts_with("19:meeting_")) {
                Scenario::ScheduledMeeting
            } else if thread.is_some() {
                Scenario::ChannelMeeting
            } else {
                Scenario::ScheduledMeeting
            });
        }
        call.targets
            .as_ref()
            .is_some()
            .then_some(Scenario::PeerToPeer)
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scenario::NAMES
            .iter()
            .position(|name| *name == text)
            .map(|i| {
                [
                    Scenario::PeerToPeer,
                    Scenario::ScheduledMeeting,
                    Scenario::ChannelMeeting,
                    Scenario::GuestJoin,
                ][i]
            })
            .ok_or_else(|| format!("`{text}` is not one of {}", Scenario::NAMES.join(", ")))
    }
}

/// A Graph application permission a calling bot needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Place peer-to-peer calls.
    CallsInitiateAll,
    /// Place group calls (more than one target).
    CallsInitiateGroupCallsAll,
    /// Join meetings and group calls.
    CallsJoinGroupCallsAll,
    /// Join meetings as a guest.
    CallsJoinGroupCallsAsGuestAll,
    /// Host the call's media in the application.
    CallsAccessMediaAll,
}

impl Permission {
    /// The permission's name as the Azure portal and Graph spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::CallsInitiateAll => "Calls.Initiate.All",
            Permission::CallsInitiateGroupCallsAll => "Calls.InitiateGroupCalls.All",
            Permission::CallsJoinGroupCallsAll => "Calls.JoinGroupCalls.All",
            Permission::CallsJoinGroupCallsAsGuestAll => "Calls.JoinGroupCallsAsGuest.All",
            Permission::CallsAccessMediaAll => "Calls.AccessMedia.All",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The application permissions a create-call request needs, after the seed's permission table and notes: one to
/// place or join the call, plus `Calls.AccessMedia.All` when the media is app hosted.
pub fn required_permissions(
    scenario: Scenario,
    app_hosted_media: bool,
    target_count: usize,
) -> Vec<Permission> {
    let mut permissions = vec![match scenario {
        Scenario::PeerToPeer if target_count > 1 => Permission::CallsInitiateGroupCallsAll,
        Scenario::PeerToPeer => Permission::CallsInitiateAll,
        Scenario::ScheduledMeeting | Scenario::ChannelMeeting => Permission::CallsJoinGroupCallsAll,
        Scenario::GuestJoin => Permission::CallsJoinGroupCallsAsGuestAll,
    }];
    if app_hosted_media {
        permissions.push(Permission::CallsAccessMediaAll);
    }
    permissions
}

impl Call {
    /// The permissions this request needs, or `None` when it is no known scenario.
    pub fn required_permissions(&self) -> Option<Vec<Permission>> {
        let scenario = Scenario::detect(self)?;
        let app_hosted = self
            .media_config
            .as_ref()
            .is_some_and(|media| media.kind() == MediaConfigKind::AppHosted);
        let targets = self.targets.as_ref().map_or(0, Vec::len);
        Some(required_permissions(scenario, app_hosted, targets))
    }
}

/// A user, organizer or guest: an id and an optional display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Id (a UUID for users; any unique id for a guest).
    pub id: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Tenant of the identity.
    pub tenant_id: Option<String>,
}

impl Party {
    /// Parses the CLI form `ID[:NAME]`.
    pub fn parse(text: &str) -> Party {
        match text.split_once(':') {
            Some((id, name)) => Party {
                id: id.to_owned(),
                display_name: Some(name.to_owned()),
                tenant_id: None,
            },
            None => Party {
                id: text.to_owned(),
                display_name: None,
                tenant_id: None,
            },
        }
    }

    fn identity(&self) -> Identity {
        let mut identity = Identity::new(&self.id, self.display_name.as_deref());
        identity.tenant_id = self.tenant_id.clone().map_or(Maybe::Absent, Maybe::Value);
        identity
    }
}

/// Which meeting to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingSpec {
    /// `chatInfo.threadId`.
    pub thread_id: String,
    /// `chatInfo.messageId` (`"0"` for scheduled meetings).
    pub message_id: String,
    /// The organizer (a user; its `tenant_id` is the meeting's tenant).
    pub organizer: Party,
    /// `allowConversationWithoutHost`.
    pub allow_conversation_without_host: bool,
}

/// Who hosts the media.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaChoice {
    /// Graph plays prompts and records; optional prompts to prefetch.
    ServiceHosted {
        /// `preFetchMedia`.
        pre_fetch_media: Vec<MediaInfo>,
    },
    /// The bot's media processor hosts the media; the blob text.
    AppHosted {
        /// The media session configuration blob (JSON text).
        blob: String,
    },
}

/// A create-call request: scenario, parties and media. [`CallRequestSpec::build`] gives the body.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequestSpec {
    /// What the call does.
    pub scenario: Scenario,
    /// `callbackUri`.
    pub callback_uri: String,
    /// Who hosts the media.
    pub media: MediaChoice,
    /// `requestedModalities` (the seed asks for audio).
    pub modalities: Vec<Modality>,
    /// Peer-to-peer: the users to call.
    pub targets: Vec<Party>,
    /// Meeting joins: which meeting.
    pub meeting: Option<MeetingSpec>,
    /// Guest join: the guest identity.
    pub guest: Option<Party>,
}

impl CallRequestSpec {
    /// The request body. Members and their values follow the seed's example for the scenario; check it with
    /// [`crate::validate_call_request`] (the builder does not refuse a spec the service would).
    pub fn build(&self) -> Call {
        let media_config = match &self.media {
            MediaChoice::ServiceHosted { pre_fetch_media } => {
                MediaConfig::service_hosted(pre_fetch_media.clone())
            }
            MediaChoice::AppHosted { blob } => MediaConfig::app_hosted(blob.clone()),
        };
        let app_hosted = matches!(self.media, MediaChoice::AppHosted { .. });
        let mut call = Call {
            odata_type: Maybe::Value(ODATA_CALL.to_owned()),
            callback_uri: Maybe::Value(self.callback_uri.clone()),
            requested_modalities: Maybe::Value(self.modalities.clone()),
            media_config: Maybe::Value(media_config),
            ..Call::default()
        };
        if !self.targets.is_empty() || self.scenario == Scenario::PeerToPeer {
            call.targets = Maybe::Value(
                self.targets
                    .iter()
                    .map(|target| InvitationParticipantInfo {
                        odata_type: Maybe::Value(ODATA_PARTICIPANT_INFO.to_owned()),
                        identity: Maybe::Value(IdentitySet::of(
                            IdentityKind::User,
                            target.identity(),
                        )),
                        ..InvitationParticipantInfo::default()
                    })
                    .collect(),
            );
        }
        if let Some(guest) = &self.guest {
            call.source = Maybe::Value(ParticipantInfo {
                odata_type: Maybe::Value(ODATA_PARTICIPANT_INFO.to_owned()),
                identity: Maybe::Value(IdentitySet::of(IdentityKind::Guest, guest.identity())),
                ..ParticipantInfo::default()
            });
        }
        if let Some(meeting) = &self.meeting {
            call.chat_info = Maybe::Value(ChatInfo {
                odata_type: Maybe::Value(ODATA_CHAT_INFO.to_owned()),
                thread_id: Maybe::Value(meeting.thread_id.clone()),
                message_id: Maybe::Value(meeting.message_id.clone()),
                ..ChatInfo::default()
            });
            let organizer = meeting.organizer.identity();
            call.meeting_info = Maybe::Value(MeetingInfo {
                odata_type: Maybe::Value(ODATA_ORGANIZER_MEETING_INFO.to_owned()),
                organizer: Maybe::Value(IdentitySet::of(IdentityKind::User, organizer)),
                allow_conversation_without_host: Maybe::Value(
                    meeting.allow_conversation_without_host,
                ),
                ..MeetingInfo::default()
            });
            // The seed's app-hosted meeting join also states the direction and the tenant at the top level.
            if app_hosted {
                call.direction = Maybe::Value(crate::graph::CallDirection::Outgoing);
                call.tenant_id = meeting
                    .organizer
                    .tenant_id
                    .clone()
                    .map_or(Maybe::Absent, Maybe::Value);
            }
        }
        call
    }
}
