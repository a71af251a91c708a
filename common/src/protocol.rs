//! Control protocol between Central, its peers and `sluicectl`: one definition of every message.
//!
//! One TLS 1.3 listener (default port 8443) carries two kinds of connection, told apart by ALPN:
//! - [`ALPN_PEER`]: the long-lived peer channel. Each message is a frame: a 4-byte big-endian
//!   payload length, then the payload in bincode. Peers send [`PeerMessage`]s, Central answers with
//!   [`CentralMessage`]s. A frame longer than [`MAX_FRAME`] is an error and closes the connection.
//! - `http/1.1` (or no ALPN): the admin API for `sluicectl` and `curl`. `POST /api/v1/<verb path>`
//!   with `Authorization: Bearer <admin token>` and the [`AdminRequest`]'s fields as a JSON body;
//!   the answer is an [`AdminReply`] or an [`ApiErrorBody`] in JSON. `GET /metrics` is Prometheus
//!   text.
//!
//! The frame parser separates "is a whole frame here?" ([`check_frame`]) from decoding
//! ([`decode_payload`]), so a reader can wait for more bytes without parsing twice.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::string::String;
use std::vec::Vec;

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// ALPN protocol id of the peer channel.
pub const ALPN_PEER: &[u8] = b"sluice-peer/1";
/// ALPN protocol id of the admin API and `/metrics`.
pub const ALPN_HTTP: &[u8] = b"http/1.1";
/// ALPN protocol id of the link between two Centrals of a hot-standby pair (see
/// `sluice_central::ha`).
pub const ALPN_HA: &[u8] = b"sluice-ha/1";
/// Largest accepted frame payload, in bytes. Template sets are the largest messages.
pub const MAX_FRAME: usize = 1 << 20;
/// Bytes of the length prefix in front of every frame.
pub const FRAME_HEADER: usize = 4;
/// Peers send a heartbeat this often, in milliseconds (unless Central says otherwise).
pub const HEARTBEAT_INTERVAL_MS: u32 = 1000;
/// Path prefix of every admin API call.
pub const API_PREFIX: &str = "/api/v1/";

/// Errors of the frame codec.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not a whole frame yet: read more bytes.
    #[error("incomplete frame")]
    Incomplete,
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] bincode::Error),
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_FRAME as u64)
}

/// Is a whole frame at the start of `buf`? Returns the frame's total length (header included).
pub fn check_frame(buf: &[u8]) -> Result<usize, FrameError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER>() else {
        return Err(FrameError::Incomplete);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    if buf.len() < FRAME_HEADER + len {
        return Err(FrameError::Incomplete);
    }
    Ok(FRAME_HEADER + len)
}

/// Decodes the payload of a frame that [`check_frame`] accepted (`frame[FRAME_HEADER..len]`).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(codec().deserialize(payload)?)
}

/// Appends `msg` as one frame to `out`.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    // Measured without the limit so an oversized message reports its size.
    let len = bincode::DefaultOptions::new().serialized_size(msg)? as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    out.reserve(FRAME_HEADER + len);
    // `len <= MAX_FRAME < u32::MAX`.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    codec().serialize_into(&mut *out, msg)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Peer channel
// ---------------------------------------------------------------------------------------------

/// Peer → Central.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// First message of every session.
    Register(Register),
    /// Every [`Registered::heartbeat_interval_ms`].
    Heartbeat(Heartbeat),
    /// Templates and option data the peer learned for one exporter and observation domain.
    Templates(Templates),
    /// The templates of [`CentralMessage::InstallTemplates`] with this id are installed.
    TemplatesInstalled {
        /// [`CentralMessage::InstallTemplates::request_id`].
        request_id: u64,
    },
    /// Every [`PeerMessage::Templates`] the peer had for the exporter of
    /// [`CentralMessage::SyncTemplates`] with this id was sent before this message.
    TemplatesSynced {
        /// [`CentralMessage::SyncTemplates::request_id`].
        request_id: u64,
    },
}

/// Central → peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CentralMessage {
    /// Answer to [`PeerMessage::Register`].
    Registered(Registered),
    /// Install these templates before Central moves their exporters to this peer; answer with
    /// [`PeerMessage::TemplatesInstalled`].
    InstallTemplates {
        /// Echoed in the acknowledgement.
        request_id: u64,
        /// Template state, one entry per (exporter, observation domain).
        templates: Vec<Templates>,
    },
    /// The session is about to be closed for this reason.
    Error(ApiErrorBody),
    /// Report the whole current template state of `exporter` now (every observation domain,
    /// changed or not), then answer with [`PeerMessage::TemplatesSynced`]. Central sends it to
    /// an exporter's current peer before moving the exporter, so the move hands over what that
    /// peer received up to this moment, not what it last reported.
    SyncTemplates {
        /// Echoed in the answer.
        request_id: u64,
        /// The exporter about to move.
        exporter: IpAddr,
    },
}

/// A peer's registration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// The access token (`sluice-central token generate`).
    pub token: String,
    /// Unique, human-chosen peer name.
    pub name: String,
    /// Stable identity of the peer installation.
    pub uuid: Uuid,
    /// Software version of the peer.
    pub version: String,
    /// Address Central forwards flow datagrams to.
    pub data_addr: IpAddr,
    /// Ingest ports the peer listens on.
    pub ports: Vec<u16>,
    /// Relative capacity within its pool.
    pub weight: u32,
    /// Pool to join; `None` lets Central choose (the default pool).
    pub pool: Option<String>,
    /// The highest hot-standby epoch this peer was registered under (0: none): a Central of an
    /// older epoch learns from it that a newer active exists, and steps down.
    #[serde(default)]
    pub epoch_seen: u64,
}

impl fmt::Debug for Register {
    // The token never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Register")
            .field("name", &self.name)
            .field("uuid", &self.uuid)
            .field("version", &self.version)
            .field("data_addr", &self.data_addr)
            .field("ports", &self.ports)
            .field("weight", &self.weight)
            .field("pool", &self.pool)
            .field("epoch_seen", &self.epoch_seen)
            .finish_non_exhaustive()
    }
}

/// Central's answer to a registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// Slot in `PEERS`.
    pub peer_id: u32,
    /// Pool the peer is in.
    pub pool: String,
    /// How often to send heartbeats.
    pub heartbeat_interval_ms: u32,
    /// Central's software version.
    pub central_version: String,
    /// Central's hot-standby epoch (0 without `[ha]`).
    #[serde(default)]
    pub epoch: u64,
}

/// Periodic health report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The Connected Peers metrics.
    pub metrics: PeerMetrics,
}

/// The "Connected Peers" metrics a peer reports every second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerMetrics {
    /// Host CPU load, percent.
    pub cpu_load_pct: f64,
    /// Host memory used, percent.
    pub mem_used_pct: f64,
    /// CPU used by the peer process, percent of one core.
    pub process_cpu_pct: f64,
    /// Resident memory of the peer process, bytes.
    pub process_mem_bytes: u64,
    /// Datagrams received per second.
    pub input_pps: f64,
    /// Flow records processed per second.
    pub flows_per_s: f64,
    /// Datagrams and records dropped since start, all reasons.
    pub total_drops: u64,
    /// Process start, seconds since the Unix epoch.
    pub start_time_unix_s: u64,
}

/// Template state for one (exporter, observation domain), opaque to Central.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Templates {
    /// Exporter address.
    pub exporter: IpAddr,
    /// NetFlow v9 source id / IPFIX observation domain id.
    pub observation_domain: u32,
    /// The peer decoder's serialized template and option-data state.
    pub bytes: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------------------------

/// An admin call. Its verb (`pools_create`) is the URL path (`/api/v1/pools/create`); the other
/// fields are the JSON body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Central's health summary.
    Status,
    /// The Connected Peers table.
    PeersList,
    /// Move a peer's exporters away and keep it out of the hash tables.
    PeersDrain {
        /// Peer name.
        name: String,
    },
    /// Undo [`AdminRequest::PeersDrain`].
    PeersUndrain {
        /// Peer name.
        name: String,
    },
    /// Every pool with its members.
    PoolsList,
    /// Create an empty pool.
    PoolsCreate {
        /// Pool name.
        name: String,
    },
    /// Delete an empty pool.
    PoolsDelete {
        /// Pool name.
        name: String,
    },
    /// Put a peer in a pool.
    PoolsAssign {
        /// Pool name.
        pool: String,
        /// Peer name.
        peer: String,
        /// New weight; `None` keeps the peer's weight.
        #[serde(default)]
        weight: Option<u32>,
    },
    /// Take a peer out of a pool.
    PoolsUnassign {
        /// Pool name.
        pool: String,
        /// Peer name.
        peer: String,
    },
    /// Every listener (address and UDP port Central steers) with its pool.
    ListenersList,
    /// Steer flow datagrams sent to `addr` to `pool`: adds the listener, or moves it to
    /// another pool (new exporters only; placed ones keep their peer).
    ListenersAdd {
        /// Address and UDP port.
        addr: SocketAddr,
        /// Pool name.
        pool: String,
    },
    /// Stop steering datagrams sent to `addr` (they go to the kernel's stack).
    ListenersRemove {
        /// Address and UDP port.
        addr: SocketAddr,
    },
    /// Every source group (exporter network → pool).
    GroupsList,
    /// New exporters inside `cidr` join `pool`, whichever listener they send to (the longest
    /// prefix wins); adds the group or moves it to another pool.
    GroupsAdd {
        /// Exporter network.
        cidr: Cidr,
        /// Pool name.
        pool: String,
    },
    /// Remove a source group.
    GroupsRemove {
        /// Exporter network.
        cidr: Cidr,
    },
    /// Every known exporter.
    ExportersList,
    /// Move an exporter to a peer now (templates first) and pin it there.
    ExportersMove {
        /// Exporter address.
        addr: IpAddr,
        /// Peer name.
        peer: String,
    },
    /// Keep an exporter where it is: the rebalancer never moves it.
    ExportersPin {
        /// Exporter address.
        addr: IpAddr,
    },
    /// Undo [`AdminRequest::ExportersPin`].
    ExportersUnpin {
        /// Exporter address.
        addr: IpAddr,
    },
    /// The rebalancer's settings.
    BalancerShow,
    /// Change some of the rebalancer's settings.
    BalancerSet(BalancerPatch),
    /// What a rebalance would do now, without doing it.
    BalancerPlan,
    /// Rebalance now.
    BalancerRun,
    /// Generate a new token (the old one of the same kind stops working, at once or after
    /// `grace_s`). The answer carries the token: it is shown once, only its hash is stored.
    TokenGenerate {
        /// Admin token instead of peer access token.
        #[serde(default)]
        admin: bool,
        /// Keep the previous token valid this long (rotation).
        #[serde(default)]
        grace_s: Option<u64>,
    },
    /// This node's hot-standby role, epoch, partner and link.
    HaStatus,
    /// Hand the active role to the standby (planned maintenance); asked of the active.
    HaSwitchover,
}

impl AdminRequest {
    /// The URL path of this request (`/api/v1/pools/create`).
    pub fn path(&self) -> Result<String, serde_json::Error> {
        let (verb, _) = self.split()?;
        Ok(std::format!("{API_PREFIX}{}", verb.replace('_', "/")))
    }

    /// The JSON body of this request (its fields without the verb).
    pub fn body(&self) -> Result<serde_json::Value, serde_json::Error> {
        Ok(self.split()?.1)
    }

    /// Rebuilds a request from its URL path and JSON body (an empty body means no fields).
    pub fn from_http(path: &str, body: &[u8]) -> Result<Self, AdminParseError> {
        let verb = path
            .strip_prefix(API_PREFIX)
            .filter(|v| !v.is_empty() && !v.contains('_'))
            .ok_or_else(|| AdminParseError::UnknownPath(path.into()))?
            .trim_end_matches('/')
            .replace('/', "_");
        let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Map::new()
        } else {
            match serde_json::from_slice(body)? {
                serde_json::Value::Object(map) => map,
                _ => return Err(AdminParseError::NotAnObject),
            }
        };
        fields.insert("verb".into(), serde_json::Value::String(verb));
        Ok(serde_json::from_value(serde_json::Value::Object(fields))?)
    }

    fn split(&self) -> Result<(String, serde_json::Value), serde_json::Error> {
        let mut value = serde_json::to_value(self)?;
        let verb = value
            .as_object_mut()
            .and_then(|map| map.remove("verb"))
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        Ok((verb, value))
    }
}

/// Why an HTTP request is not an [`AdminRequest`].
#[derive(Debug, thiserror::Error)]
pub enum AdminParseError {
    /// The path is not under [`API_PREFIX`].
    #[error("no such API path: {0}")]
    UnknownPath(String),
    /// The body is JSON but not an object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// Bad JSON, unknown verb, missing or unknown field.
    #[error("bad request: {0}")]
    Json(#[from] serde_json::Error),
}

/// An IP network: address with host bits cleared, and prefix length in its own family.
/// Written `198.18.0.0/15` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// `addr/prefix_len` with host bits cleared; `None` if the length exceeds the family's.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let bits = u32::from(prefix_len);
        let addr = match addr {
            IpAddr::V4(v4) if bits <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                IpAddr::from((u32::from(v4) & mask).to_be_bytes())
            }
            IpAddr::V6(v6) if bits <= 128 => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::from((u128::from(v6) & mask).to_be_bytes())
            }
            _ => return None,
        };
        Some(Self { addr, prefix_len })
    }

    /// Network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length, in bits of the address's family.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl core::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| std::format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| std::format!("{s:?}: bad address: {e}"))?;
        let len: u8 = len
            .parse()
            .map_err(|e| std::format!("{s:?}: bad prefix length: {e}"))?;
        Self::new(addr, len).ok_or_else(|| std::format!("{s:?}: prefix length too long"))
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Fields of [`AdminRequest::BalancerSet`]; absent fields keep their value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerPatch {
    /// Seconds between rebalances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance_interval_s: Option<u64>,
    /// Allowed distance from a peer's share, percentage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_margin_pct: Option<f64>,
    /// Heartbeat silence after which a peer is OFFLINE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_timeout_ms: Option<u64>,
}

/// Successful answer of an admin call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum AdminReply {
    /// [`AdminRequest::Status`].
    Status(StatusView),
    /// [`AdminRequest::PeersList`].
    Peers(Vec<PeerView>),
    /// [`AdminRequest::PoolsList`].
    Pools(Vec<PoolView>),
    /// [`AdminRequest::ListenersList`].
    Listeners(Vec<ListenerView>),
    /// [`AdminRequest::GroupsList`].
    Groups(Vec<SourceGroupView>),
    /// [`AdminRequest::ExportersList`].
    Exporters(Vec<ExporterView>),
    /// [`AdminRequest::BalancerShow`], [`AdminRequest::BalancerSet`].
    Balancer(BalancerSettings),
    /// [`AdminRequest::BalancerPlan`], [`AdminRequest::BalancerRun`].
    Plan(PlanView),
    /// [`AdminRequest::TokenGenerate`].
    Token(TokenView),
    /// Any change that has nothing to show.
    Done(DoneView),
    /// [`AdminRequest::HaStatus`], [`AdminRequest::HaSwitchover`].
    Ha(HaStatusView),
}

/// A hot-standby node's view of the pair (`sluicectl ha status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HaStatusView {
    /// This node's name (`ha.node`).
    pub node: String,
    /// `active` or `standby`.
    pub role: String,
    /// The current term: bumped by every takeover; a node that sees a higher one steps down.
    pub epoch: u64,
    /// This node's priority.
    pub priority: u8,
    /// The partner's name and HA address.
    pub partner: String,
    /// The partner's address (its control API).
    pub partner_address: String,
    /// The partner's role as it last said, if it was heard from.
    pub partner_role: Option<String>,
    /// A link to the partner is up and authenticated.
    pub link_up: bool,
    /// Milliseconds since the partner was last heard from.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// Sequence number of the last mirror message sent (active) or applied (standby).
    pub mirror_seq: u64,
    /// Milliseconds from sending the last mirror change to its application on the standby.
    pub mirror_lag_ms: Option<u64>,
    /// The standby has applied a full snapshot of the active's state.
    pub mirror_synced: bool,
    /// Takeovers by this node since start.
    pub takeovers: u64,
    /// The last role change: when (ms since the Unix epoch) and why.
    pub last_change_unix_ms: Option<u64>,
    /// Why the last role change happened.
    pub last_change_reason: Option<String>,
    /// Takeovers this node held back because another host still answered for the virtual IP.
    pub takeovers_refused: u64,
    /// HA connections refused (wrong credential, bad message).
    pub link_refused: u64,
    /// Virtual IPs (`address/prefix`).
    pub vips: Vec<String>,
    /// The interface the virtual IPs live on.
    pub interface: String,
    /// Heartbeat interval and takeover timeout, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Milliseconds without heartbeat before the standby considers taking over.
    pub takeover_timeout_ms: u64,
    /// A recovered node of higher priority takes the active role back.
    pub preempt: bool,
}

/// Error answer of the admin API (and the last message of a refused peer session).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Machine-readable class.
    pub code: ErrorCode,
    /// One line for a human.
    pub message: String,
}

/// Classes of API errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing or wrong token.
    Unauthorized,
    /// Too many failed authentications from this source.
    RateLimited,
    /// Malformed request.
    BadRequest,
    /// Frame or body over the limit.
    TooLarge,
    /// Unknown peer, pool or exporter.
    NotFound,
    /// The request conflicts with the current state (pool not empty, name taken, …).
    Conflict,
    /// Central failed.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that carries this error.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::RateLimited => 429,
            ErrorCode::BadRequest => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Internal => 500,
        }
    }
}

/// Status Central derives for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerStatus {
    /// Heartbeats arrive.
    Online,
    /// Silent for the peer timeout.
    Offline,
    /// Being emptied by `peers drain`.
    Draining,
}

impl PeerStatus {
    /// Every status.
    pub const ALL: [PeerStatus; 3] = [
        PeerStatus::Online,
        PeerStatus::Offline,
        PeerStatus::Draining,
    ];

    /// `ONLINE`, `OFFLINE`, `DRAINING`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Online => "ONLINE",
            PeerStatus::Offline => "OFFLINE",
            PeerStatus::Draining => "DRAINING",
        }
    }
}

impl fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the Connected Peers table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Slot in `PEERS`.
    pub id: u32,
    /// Peer name.
    pub name: String,
    /// Installation id.
    pub uuid: Uuid,
    /// Software version.
    pub version: String,
    /// Forwarding target address.
    pub data_addr: IpAddr,
    /// Ingest ports.
    pub ports: Vec<u16>,
    /// Pool, if assigned.
    pub pool: Option<String>,
    /// Relative capacity.
    pub weight: u32,
    /// Derived status.
    pub status: PeerStatus,
    /// Last heartbeat, milliseconds since the Unix epoch.
    pub last_seen_unix_ms: Option<u64>,
    /// Exporters assigned to this peer.
    pub exporters: u64,
    /// The last heartbeat's metrics.
    pub metrics: Option<PeerMetrics>,
}

/// A pool member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolMember {
    /// Peer name.
    pub peer: String,
    /// Weight within the pool.
    pub weight: u32,
    /// The peer's status.
    pub status: PeerStatus,
}

/// A pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Pool id in the maps.
    pub id: u32,
    /// Members.
    pub peers: Vec<PoolMember>,
    /// Exporters in the pool.
    pub exporters: u64,
}

impl PoolView {
    /// Members that can take traffic.
    pub fn healthy_peers(&self) -> usize {
        self.peers
            .iter()
            .filter(|m| m.status == PeerStatus::Online)
            .count()
    }
}

/// A listener: flow datagrams sent to this address and port are steered to the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerView {
    /// Address and UDP port.
    pub address: SocketAddr,
    /// Pool name.
    pub pool: String,
}

/// A source group: new exporters inside the network join the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceGroupView {
    /// Exporter network.
    pub cidr: Cidr,
    /// Pool name.
    pub pool: String,
}

/// One exporter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExporterView {
    /// Exporter address.
    pub address: IpAddr,
    /// Pool.
    pub pool: Option<String>,
    /// Assigned peer.
    pub peer: Option<String>,
    /// Smoothed packets per second.
    pub pps: f64,
    /// Smoothed bits per second.
    pub bps: f64,
    /// Pinned by an operator.
    pub pinned: bool,
    /// Last datagram, milliseconds since the Unix epoch.
    pub last_seen_unix_ms: Option<u64>,
}

/// Rebalancer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalancerSettings {
    /// Seconds between rebalances.
    pub rebalance_interval_s: u64,
    /// Allowed distance from a peer's share, percentage points.
    pub distribution_margin_pct: f64,
    /// Heartbeat silence after which a peer is OFFLINE.
    pub peer_timeout_ms: u64,
}

/// One planned (or applied) exporter move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveView {
    /// Exporter address.
    pub exporter: IpAddr,
    /// Pool.
    pub pool: String,
    /// Current peer.
    pub from: String,
    /// New peer.
    pub to: String,
    /// The exporter's packet rate.
    pub pps: f64,
}

/// An exporter larger than any peer's share: reported, never moved back and forth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OversizedView {
    /// Exporter address.
    pub exporter: IpAddr,
    /// Pool.
    pub pool: String,
    /// The exporter's packet rate.
    pub pps: f64,
}

/// A rebalance plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    /// Moves, in order.
    pub moves: Vec<MoveView>,
    /// Exporters too large to place within the margin.
    pub too_large: Vec<OversizedView>,
    /// Whether the moves were carried out.
    pub applied: bool,
}

/// A freshly generated token (shown once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    /// The token itself.
    pub token: String,
    /// `sha256:<hex>` of the token: what Central stores and peers display.
    pub hash: String,
    /// `peer` or `admin`.
    pub kind: String,
    /// When the previous token stops working, seconds since the Unix epoch.
    pub previous_expires_unix_s: Option<u64>,
}

/// Outcome of a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoneView {
    /// What happened, for a human.
    pub message: String,
}

/// Health of one pool, for `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolHealth {
    /// Pool name.
    pub name: String,
    /// Members that can take traffic.
    pub healthy_peers: u64,
    /// All members.
    pub peers: u64,
}

/// Central's health summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Central's software version.
    pub version: String,
    /// `sha256:<hex>` of the control API certificate.
    pub fingerprint: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Known peers.
    pub peers: u64,
    /// Peers ONLINE.
    pub peers_online: u64,
    /// Known exporters.
    pub exporters: u64,
    /// Every pool's health; a pool without healthy peer drops its traffic.
    pub pools: Vec<PoolHealth>,
    /// Rebalances that moved at least one exporter.
    pub rebalances: u64,
    /// Peers declared OFFLINE whose exporters were reassigned.
    pub failovers: u64,
    /// Failed authentications since start.
    pub auth_failures: u64,
    /// Rebalancer settings.
    pub balancer: BalancerSettings,
    /// Hot-standby role (`active`, `standby`), absent without `[ha]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_role: Option<String>,
}

impl StatusView {
    /// Pools that have members but none healthy: their traffic is dropped.
    pub fn pools_without_healthy_peer(&self) -> impl Iterator<Item = &PoolHealth> {
        self.pools.iter().filter(|p| p.healthy_peers == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec;

    fn register() -> PeerMessage {
        PeerMessage::Register(Register {
            token: "t".into(),
            name: "peer-a".into(),
            uuid: Uuid::nil(),
            version: "0.1.0".into(),
            data_addr: "198.18.2.2".parse().unwrap(),
            ports: vec![2055, 4739],
            weight: 1,
            pool: Some("default".into()),
            epoch_seen: 3,
        })
    }

    #[test]
    fn frame_round_trip_and_incremental_check() {
        let mut buf = Vec::new();
        encode_frame(&register(), &mut buf).unwrap();
        encode_frame(&PeerMessage::TemplatesInstalled { request_id: 7 }, &mut buf).unwrap();
        let first = check_frame(&buf).unwrap();
        for cut in 0..first {
            assert!(matches!(
                check_frame(&buf[..cut]),
                Err(FrameError::Incomplete)
            ));
        }
        let msg: PeerMessage = decode_payload(&buf[FRAME_HEADER..first]).unwrap();
        assert_eq!(msg, register());
        let rest = &buf[first..];
        let second = check_frame(rest).unwrap();
        assert_eq!(second, rest.len());
        let msg: PeerMessage = decode_payload(&rest[FRAME_HEADER..]).unwrap();
        assert_eq!(msg, PeerMessage::TemplatesInstalled { request_id: 7 });
    }

    #[test]
    fn oversized_frame_is_rejected_from_its_header() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            check_frame(&header),
            Err(FrameError::TooLarge { .. })
        ));
        let big = PeerMessage::Templates(Templates {
            exporter: "198.18.0.9".parse().unwrap(),
            observation_domain: 0,
            bytes: vec![0; MAX_FRAME],
        });
        assert!(matches!(
            encode_frame(&big, &mut Vec::new()),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_payload_is_malformed() {
        let res: Result<PeerMessage, _> = decode_payload(&[0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(res, Err(FrameError::Malformed(_))));
    }

    #[test]
    fn token_is_not_in_debug_output() {
        assert!(!std::format!("{:?}", register()).contains("token"));
    }

    #[test]
    fn admin_request_http_round_trip() {
        let requests = [
            AdminRequest::Status,
            AdminRequest::PoolsAssign {
                pool: "p".into(),
                peer: "a".into(),
                weight: Some(3),
            },
            AdminRequest::ExportersMove {
                addr: "198.18.0.5".parse().unwrap(),
                peer: "b".into(),
            },
            AdminRequest::ListenersAdd {
                addr: "198.18.0.1:2055".parse().unwrap(),
                pool: "edge".into(),
            },
            AdminRequest::GroupsRemove {
                cidr: "2001:db8::/32".parse().unwrap(),
            },
            AdminRequest::BalancerSet(BalancerPatch {
                distribution_margin_pct: Some(2.5),
                ..BalancerPatch::default()
            }),
            AdminRequest::TokenGenerate {
                admin: true,
                grace_s: Some(3600),
            },
        ];
        for req in requests {
            let path = req.path().unwrap();
            let body = serde_json::to_vec(&req.body().unwrap()).unwrap();
            assert_eq!(
                AdminRequest::from_http(&path, &body).unwrap(),
                req,
                "{path}"
            );
        }
        assert_eq!(
            AdminRequest::PoolsCreate { name: "x".into() }
                .path()
                .unwrap(),
            "/api/v1/pools/create"
        );
        assert_eq!(
            AdminRequest::from_http("/api/v1/peers/list", b"").unwrap(),
            AdminRequest::PeersList
        );
    }

    #[test]
    fn cidr_parses_normalises_and_round_trips() {
        let c: Cidr = "198.18.1.77/15".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.0.0/15");
        let c6: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(c6.to_string(), "2001:db8::/32");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len(), 0);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"198.18.0.0/15\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).unwrap(), c);
    }

    #[test]
    fn admin_request_rejects_unknown_paths_and_fields() {
        assert!(AdminRequest::from_http("/api/v1/nope", b"").is_err());
        assert!(AdminRequest::from_http("/api/v1/pools_create", b"{\"name\":\"x\"}").is_err());
        assert!(AdminRequest::from_http("/other", b"").is_err());
        assert!(AdminRequest::from_http("/api/v1/pools/create", b"{\"nam\":\"x\"}").is_err());
        assert!(AdminRequest::from_http("/api/v1/pools/create", b"[1]").is_err());
        assert!(
            AdminRequest::from_http(
                "/api/v1/groups/add",
                br#"{"cidr":"10.0.0.0/33","pool":"x"}"#
            )
            .is_err()
        );
        assert!(
            AdminRequest::from_http(
                "/api/v1/listeners/add",
                br#"{"addr":"10.0.0.1","pool":"x"}"#
            )
            .is_err()
        );
        assert!(
            AdminRequest::from_http("/api/v1/status", b"{\"verb\":\"pools_create\"}")
                .is_ok_and(|r| r == AdminRequest::Status)
        );
    }
}
