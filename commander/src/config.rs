//! The commander's configuration: `commander.toml` in the data dir, CLI
//! flags on top. Unknown keys are refused.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CommanderError, Result};

/// Name of the config file inside the data dir.
pub const CONFIG_FILE: &str = "commander.toml";

/// Where the commander listens by default: loopback, so a first start never
/// exposes a port; a real deployment sets `listen = "0.0.0.0:7443"`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";

/// Where the dashboard and `/metrics` listen by default: loopback, where
/// reading needs no credentials (see [`crate::web`]), on a port of its own
/// beside the gRPC one (7443) so a firewall rule can open one and not the
/// other. `off` (or empty) turns the HTTP server off.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8447";

/// How long a lease lives without a progress report. Six heartbeats: an
/// agent on a flaky Wi-Fi link can miss five in a row and keep its job,
/// while a dead device's work moves on within half a minute.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// How often agents heartbeat and report progress. Often enough that pause
/// and new work reach a device within seconds; rare enough that 200 agents
/// cost the commander 40 small requests a second.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Failed attempts (lost leases or failed jobs) before a run fails for good.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// First wait before retrying a run whose job failed; doubles each attempt.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(10);

/// Cap on that wait: a failing origin is retried at least every 10 minutes.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Life of an enrolment token: long enough to walk to the device and flash
/// it, short enough that a token left in a shell history is soon useless.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Versions a target keeps when neither it nor the config says otherwise:
/// enough to step back past one bad release, few enough for a NAS.
pub const DEFAULT_KEEP: u32 = 3;

/// How long a quorum group waits for its confirmations before it is tried
/// again from the start: the waiting state expires like a lease does.
pub const DEFAULT_QUORUM_TTL: Duration = Duration::from_secs(3600);

/// Most agents a quorum may ask for.
pub const MAX_QUORUM: u32 = 9;

/// How many independent agents must agree before a version lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// Exactly this many (1 = the harvesting agent alone).
    Fixed(u32),
    /// Every harvest confirmed until the agent has a run of confirmed
    /// results for the kind, then a sample of them (see
    /// [`crate::scheduler::quorum`]).
    Adaptive,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum::Fixed(1)
    }
}

impl Quorum {
    /// Parses `--quorum` / `quorum`: 1..=9 or `adaptive`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("adaptive") {
            return Ok(Quorum::Adaptive);
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=MAX_QUORUM).contains(&n) => Ok(Quorum::Fixed(n)),
            _ => Err(format!(
                "quorum {text:?} is not 1 to {MAX_QUORUM} agents or \"adaptive\""
            )),
        }
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quorum::Fixed(n) => write!(f, "{n}"),
            Quorum::Adaptive => f.write_str("adaptive"),
        }
    }
}

impl Serialize for Quorum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Quorum::Fixed(n) => s.serialize_u32(*n),
            Quorum::Adaptive => s.serialize_str("adaptive"),
        }
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        Quorum::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// °C at which an agent stops taking new work: a Raspberry Pi starts to
/// throttle its CPU at 80 °C, so 75 °C leaves a running job room to finish
/// at full speed; a laptop's sensors read higher, so raise it per agent.
pub const DEFAULT_MAX_TEMP: f32 = 75.0;

/// Oldest a target may get before it is stale: Kiwix publishes a book
/// every few months, so 120 days flags a release that stopped moving
/// without crying wolf between two releases. Feeds and mirrors that fail
/// are stale sooner, by their failures (see [`crate::state::STALE_FAILURES`]).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(120 * 24 * 3600);

/// The commander's effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommanderConfig {
    pub listen: String,
    /// The dashboard's and `/metrics`' address; `off` or empty: none.
    pub http: String,
    /// Extra names/addresses for the server certificate (DNS or IP).
    pub san: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Where verified files land: a directory (the NAS; empty means
    /// `<data>/archive`) or an object store, `s3://bucket/prefix` (`[s3]`
    /// says how to reach it).
    pub archive: String,
    /// `[s3]`: the object store of an `s3://` archive.
    pub s3: S3Config,
    /// Versions each target keeps unless its own `--keep` says otherwise.
    pub keep: u32,
    /// Where agents may fetch from (`[fetch]`).
    pub fetch: FetchConfig,
    /// Independent agents that must agree on a version before it lands,
    /// for targets that do not say (`1`..`9` or `"adaptive"`).
    pub quorum: Quorum,
    /// How long a quorum group waits for its confirmations.
    #[serde(with = "humantime_serde")]
    pub quorum_ttl: Duration,
    /// Oldest a target may get (since its newest version was last confirmed
    /// current) before it is stale, for targets that do not say.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// °C at or above which an agent gets no new work (an agent's or a
    /// target's own `--max-temp` overrides it).
    pub max_temp: f32,
    /// Whether an agent on battery gets new work: `deny` or `allow` (an
    /// agent's own `--on-battery` overrides it).
    pub on_battery: OnBattery,
    /// `[[pause_when]]`: when the swarm yields to the household (see
    /// [`crate::household`]).
    #[serde(rename = "pause_when", skip_serializing_if = "Vec::is_empty")]
    pub pause_when: Vec<crate::household::PauseRule>,
    /// How often the pause rules are evaluated.
    #[serde(with = "humantime_serde")]
    pub pause_check: Duration,
    /// Bytes/s every agent's transfers drop to while the swarm yields.
    pub yield_floor: u64,
    /// How long an agent may stay at or over its temperature cap, its
    /// transfers slowed, before its jobs go to other agents.
    #[serde(with = "humantime_serde")]
    pub hot_handback: Duration,
    /// How often the dashboard's history is sampled (see [`crate::history`]).
    #[serde(with = "humantime_serde")]
    pub history_every: Duration,
    /// How long the dashboard's history keeps its samples.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
}

/// How often the history is sampled: a harvest of a few minutes shows as a
/// shape, not a dot, and a day of samples is 5,760 points per series.
pub const DEFAULT_HISTORY_EVERY: Duration = Duration::from_secs(15);

/// How long the history keeps its samples: a day shows last night's
/// off-peak window and this evening's film beside each other.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How long a hot agent keeps its jobs, slowed: ten minutes is time for a
/// Pi in a warm cupboard to cool once its load drops, and short next to a
/// big harvest it would otherwise finish at a crawl.
pub const DEFAULT_HOT_HANDBACK: Duration = Duration::from_secs(600);

/// How often the pause rules are read: a game or a film starting is noticed
/// within seconds, and the sources (a TCP connect, one instant query) cost
/// nothing at that pace.
pub const DEFAULT_PAUSE_CHECK: Duration = Duration::from_secs(10);

/// The rate transfers drop to while the swarm yields: 32 KiB/s keeps every
/// lease renewed and every job alive, and is lost in any household's
/// traffic.
pub const DEFAULT_YIELD_FLOOR: u64 = 32 << 10;

/// Work for an agent on battery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBattery {
    /// A laptop unplugged keeps its battery for its owner.
    #[default]
    Deny,
    Allow,
}

impl OnBattery {
    /// `--on-battery allow|deny`; "" is none (the default applies).
    pub fn parse(text: &str) -> Result<Option<Self>> {
        match text.trim() {
            "" => Ok(None),
            "allow" => Ok(Some(Self::Allow)),
            "deny" => Ok(Some(Self::Deny)),
            other => Err(CommanderError::Invalid(format!(
                "--on-battery {other:?}: say allow or deny"
            ))),
        }
    }
}

/// `[fetch]`: the destinations agents may reach beyond public addresses.
/// A target's own URL is always allowed for its origin; redirects,
/// enclosures and sidecars that lead into the household's network
/// (loopback, link-local, private, unique-local) are refused unless the
/// network is listed here. The commander's own endpoints never are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FetchConfig {
    /// Networks in CIDR notation (`"192.168.1.0/24"`) or single addresses.
    pub allow: Vec<String>,
}

impl Default for CommanderConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            http: DEFAULT_HTTP.into(),
            san: Vec::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            heartbeat: DEFAULT_HEARTBEAT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            token_ttl: DEFAULT_TOKEN_TTL,
            archive: String::new(),
            keep: DEFAULT_KEEP,
            fetch: FetchConfig::default(),
            quorum: Quorum::default(),
            quorum_ttl: DEFAULT_QUORUM_TTL,
            max_age: DEFAULT_MAX_AGE,
            max_temp: DEFAULT_MAX_TEMP,
            on_battery: OnBattery::Deny,
            pause_when: Vec::new(),
            pause_check: DEFAULT_PAUSE_CHECK,
            yield_floor: DEFAULT_YIELD_FLOOR,
            hot_handback: DEFAULT_HOT_HANDBACK,
            history_every: DEFAULT_HISTORY_EVERY,
            history_retention: DEFAULT_HISTORY_RETENTION,
            s3: S3Config::default(),
        }
    }
}

/// Garage's region unless its `s3_region` says otherwise: Ark's object
/// store of choice (self-hosted, several houses); AWS users write theirs.
pub const DEFAULT_S3_REGION: &str = "garage";

/// `[s3]`: how the commander reaches an `s3://` archive. The secret is in
/// a separate AWS-style credentials file (mode 0600, never in this config,
/// never logged).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Config {
    /// The store's S3 endpoint, `http://nas:3900` (Garage) or `https://…`.
    pub endpoint: String,
    pub region: String,
    /// The credentials file (`[default]` with `aws_access_key_id` and
    /// `aws_secret_access_key`), relative to the data dir or absolute.
    pub credentials: String,
    /// The profile in the credentials file.
    pub profile: String,
    /// Where the bucket is mounted on this machine (s3fs, rclone mount),
    /// if it is: `zim/library.xml` then points kiwix-serve at the ZIMs
    /// there. Empty: the library lists no book (kiwix-serve needs files).
    pub mount: String,
    /// The `litestream` executable that replicates the state databases to
    /// the store (`litestream` on the PATH when empty); `off`: none.
    pub litestream: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: DEFAULT_S3_REGION.into(),
            credentials: String::new(),
            profile: "default".into(),
            mount: String::new(),
            litestream: String::new(),
        }
    }
}

impl CommanderConfig {
    /// Reads `<data>/commander.toml`; a missing file means all defaults.
    pub fn load(data: &Path) -> Result<Self> {
        let path = data.join(CONFIG_FILE);
        let config: Self = ark_core::config::load_toml(&path).map_err(|e| match e {
            ark_core::config::ConfigError::Read { path, source } => {
                CommanderError::io("reading", path)(source)
            }
            ark_core::config::ConfigError::Parse { path, message } => {
                CommanderError::Config { path, message }
            }
        })?;
        config
            .validate()
            .map_err(|message| CommanderError::Config { path, message })?;
        Ok(config)
    }

    /// Checks the relations between values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.heartbeat.is_zero() || self.lease_ttl <= self.heartbeat {
            return Err(format!(
                "lease-ttl ({:?}) must be longer than heartbeat ({:?}), or every lease expires between two reports",
                self.lease_ttl, self.heartbeat
            ));
        }
        if self.keep == 0 {
            return Err(
                "keep must be at least 1: a target with no versions has nothing archived".into(),
            );
        }
        if self.max_attempts == 0 {
            return Err("max-attempts must be at least 1".into());
        }
        for net in &self.fetch.allow {
            let text = net.trim();
            if text.parse::<ipnet::IpNet>().is_err() && text.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "fetch.allow: {net:?} is not a network (write it as \"192.168.1.0/24\" or one address)"
                ));
            }
        }
        for rule in &self.pause_when {
            rule.check().map_err(|e| e.to_string())?;
        }
        if self.pause_check.is_zero() {
            return Err("pause-check must be longer than 0s".into());
        }
        if self.history_every.is_zero() || self.history_retention < self.history_every {
            return Err(format!(
                "history-every ({:?}) must be longer than 0s and no longer than \
                 history-retention ({:?}), or the history keeps no sample",
                self.history_every, self.history_retention
            ));
        }
        Ok(())
    }

    /// The dashboard's listen address, None when it is turned off.
    pub fn http_addr(&self) -> Option<&str> {
        match self.http.trim() {
            "" | "off" => None,
            addr => Some(addr),
        }
    }

    /// Whether the archive is in an object store (`s3://…`).
    pub fn archive_in_store(&self) -> bool {
        self.archive.starts_with("s3://")
    }

    /// The archive's local root for a commander with data dir `data`: the
    /// archive itself on a filesystem; with an object store, where its
    /// local side lives (quarantine, git mirrors, feed entries, the Kiwix
    /// library), `<data>/archive`.
    pub fn archive_dir(&self, data: &Path) -> std::path::PathBuf {
        if self.archive.is_empty() || self.archive_in_store() {
            data.join("archive")
        } else {
            data.join(&self.archive)
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
