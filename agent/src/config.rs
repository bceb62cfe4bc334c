//! The agent's configuration: `agent.toml` in the data dir, with CLI flags
//! laid over it. Unknown keys are refused so a typo never silently falls
//! back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{AgentError, Result};

/// Name of the config file inside the data dir.
pub const CONFIG_FILE: &str = "agent.toml";

/// Jobs at once by default: one keeps a Pi's SD card and uplink from
/// thrashing; bigger devices raise it in `agent.toml`.
pub const DEFAULT_MAX_JOBS: u32 = 1;

/// The agent's effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    /// Commander address; empty means the one recorded at enrolment.
    pub commander: String,
    /// Where downloads are staged; empty means `<data>/staging`.
    pub staging: PathBuf,
    /// Job kinds this agent offers to run.
    pub kinds: Vec<String>,
    /// Jobs at once.
    pub max_jobs: u32,
    /// Bytes per second across all jobs; 0 = uncapped.
    pub bandwidth_cap: u64,
    /// Longest wait between reconnect attempts when the commander is away.
    #[serde(with = "humantime_serde")]
    pub max_reconnect_backoff: Duration,
    /// Largest file a job may fetch, in bytes.
    pub max_size: u64,
    /// Longest silence from an origin before a fetch gives up.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Minimum average download rate (bytes/s) over `min-rate-window`; 0 = off.
    pub min_rate: u64,
    #[serde(with = "humantime_serde")]
    pub min_rate_window: Duration,
    /// What kind of device this is ("pi4", "laptop"), so a quorum can ask
    /// distinct kinds of device; empty means the architecture and OS.
    pub device_class: String,
    /// Where thermal zones and power supplies are read from; empty means
    /// the machine's own (/sys, and the sensors sysinfo finds). Set it in a
    /// container that bind-mounts the host's /sys elsewhere.
    pub sysfs: PathBuf,
    /// Which uplink this device shares (`uplink = "home"`): agents behind
    /// the same one back off together.
    pub uplink: String,
    /// The queuing delay this agent's transfers may add to the uplink
    /// (self-yield; `agent set NAME --yield off` turns it off).
    #[serde(with = "humantime_serde")]
    pub yield_target: Duration,
    /// `HOST:PORT` whose TCP connect time is measured while transferring;
    /// empty means the origin itself.
    pub yield_reflector: String,
}

/// The uplink an agent shares when `agent.toml` names none: one household,
/// one uplink.
pub const DEFAULT_UPLINK: &str = "home";

/// Longest pause between reconnect attempts: short enough that an agent is
/// back within half a minute of the commander returning.
pub const DEFAULT_MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(30);

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            commander: String::new(),
            staging: PathBuf::new(),
            kinds: ark_core::Kind::HARVESTED
                .iter()
                .map(|k| k.to_string())
                .collect(),
            max_jobs: DEFAULT_MAX_JOBS,
            bandwidth_cap: 0,
            max_reconnect_backoff: DEFAULT_MAX_RECONNECT_BACKOFF,
            max_size: crate::fetch::DEFAULT_MAX_SIZE,
            read_timeout: crate::fetch::DEFAULT_READ_TIMEOUT,
            min_rate: crate::fetch::DEFAULT_MIN_RATE,
            min_rate_window: crate::fetch::DEFAULT_MIN_RATE_WINDOW,
            device_class: String::new(),
            sysfs: PathBuf::new(),
            uplink: DEFAULT_UPLINK.into(),
            yield_target: crate::self_yield::DEFAULT_TARGET,
            yield_reflector: String::new(),
        }
    }
}

impl AgentConfig {
    /// Reads `<data>/agent.toml`; a missing file means all defaults.
    pub fn load(data: &Path) -> Result<Self> {
        let path = data.join(CONFIG_FILE);
        ark_core::config::load_toml(&path).map_err(|e| AgentError::Config {
            path,
            message: e.to_string(),
        })
    }

    /// The staging directory, resolved against the data dir.
    pub fn staging_dir(&self, data: &Path) -> PathBuf {
        if self.staging.as_os_str().is_empty() {
            data.join("staging")
        } else {
            self.staging.clone()
        }
    }

    /// The fetch limits this config sets.
    pub fn limits(&self) -> crate::fetch::Limits {
        crate::fetch::Limits {
            max_size: self.max_size,
            read_timeout: self.read_timeout,
            min_rate: self.min_rate,
            min_rate_window: self.min_rate_window,
            ..crate::fetch::Limits::default()
        }
    }

    /// What self-yield runs with. Its floor stays clear of the minimum-rate
    /// rule, so backing off never fails a fetch as too slow.
    pub fn self_yield(&self) -> crate::self_yield::YieldConfig {
        crate::self_yield::YieldConfig {
            target: self.yield_target,
            reflector: (!self.yield_reflector.trim().is_empty())
                .then(|| self.yield_reflector.trim().to_string()),
            floor: crate::self_yield::DEFAULT_FLOOR.max(self.min_rate.saturating_mul(2)),
        }
    }

    /// The effective config as TOML, for `show-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CONFIG_FILE), "max-jobs = 2\nmax_jobz = 3\n")
            .expect("write");
        let err = AgentConfig::load(dir.path()).expect_err("typo accepted");
        let text = err.to_string();
        assert!(
            text.contains("agent.toml") && text.contains("max_jobz"),
            "{text}"
        );
    }

    #[test]
    fn file_overrides_defaults_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "max-jobs = 3\nbandwidth-cap = 1000\nmax-reconnect-backoff = \"5s\"\n\
             yield-target = \"40ms\"\nyield-reflector = \"192.0.2.1:443\"\nuplink = \"attic\"\n",
        )
        .expect("write");
        let config = AgentConfig::load(dir.path()).expect("load");
        assert_eq!(config.max_jobs, 3);
        assert_eq!(config.bandwidth_cap, 1000);
        assert_eq!(config.max_reconnect_backoff, Duration::from_secs(5));
        let self_yield = config.self_yield();
        assert_eq!(self_yield.target, Duration::from_millis(40));
        assert_eq!(self_yield.reflector.as_deref(), Some("192.0.2.1:443"));
        assert_eq!(config.uplink, "attic");
        assert_eq!(
            config.kinds,
            ark_core::Kind::HARVESTED
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>(),
            "every kind this agent harvests"
        );
        let again: AgentConfig = toml::from_str(&config.to_toml()).expect("reparse");
        assert_eq!(again, config);
    }
}
