//! Device readings for heartbeats and registration: CPU load, memory,
//! temperature (where the device has a sensor), free space where downloads
//! are staged, and harvest throughput. One [`Sampler`] lives for the whole
//! session because CPU usage is measured between two refreshes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ark_proto::{Capabilities, Telemetry};
use sysinfo::{Components, System};

/// Below this much free on its staging disk an agent announces low disk
/// and is given no run whose size is unknown: 16 MiB, a few feeds' worth,
/// and room for the registry's and the status file's own writes. (A run
/// of known size needs its size plus the commander's margin, see
/// `disk_margin` in the commander's placement.)
pub const LOW_DISK: u64 = 16 << 20;

/// Bytes harvested by all jobs, counted as they arrive; the sampler turns it
/// into a rate.
#[derive(Debug, Default, Clone)]
pub struct ByteCounter(Arc<AtomicU64>);

impl ByteCounter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Takes telemetry readings; keeps the state needed to compute rates.
#[derive(Debug)]
pub struct Sampler {
    system: System,
    components: Components,
    staging: PathBuf,
    bytes: ByteCounter,
    last: (Instant, u64),
    /// Where thermal zones and power supplies are read (`sysfs` in
    /// agent.toml): None reads the machine's own (/sys, and the sensors
    /// sysinfo finds).
    sysfs: Option<PathBuf>,
}

impl Sampler {
    pub fn new(staging: &Path, bytes: ByteCounter) -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        let last = (Instant::now(), bytes.total());
        Self {
            system,
            components: Components::new_with_refreshed_list(),
            staging: staging.to_path_buf(),
            bytes,
            last,
            sysfs: None,
        }
    }

    /// Reads thermal zones and power supplies under `sysfs` instead of the
    /// machine's own (a container's bind mount; the tests' fake devices).
    pub fn with_sysfs(mut self, sysfs: Option<PathBuf>) -> Self {
        self.sysfs = sysfs;
        self
    }

    /// Whether the staging disk is below [`LOW_DISK`] (or cannot be read).
    pub fn low_disk(&mut self) -> bool {
        ark_core::fs::free_space(&self.staging).is_none_or(|free| free < LOW_DISK)
    }

    /// Free bytes on the filesystem holding the staging dir, to this
    /// (unprivileged) writer: a tmpfs, a quota'd volume or a bind mount
    /// counts as what it is.
    pub fn staging_free(&mut self) -> u64 {
        ark_core::fs::free_space(&self.staging).unwrap_or(0)
    }

    /// One reading; CPU and throughput are averages since the previous one.
    pub fn sample(&mut self) -> Telemetry {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.components.refresh(false);
        let temperature = match &self.sysfs {
            Some(root) => thermal_max(root),
            None => self
                .components
                .list()
                .iter()
                .filter_map(|c| c.temperature())
                .filter(|t| t.is_finite())
                .reduce(f32::max),
        };
        let on_battery = on_battery(self.sysfs.as_deref().unwrap_or(Path::new("/sys")));
        let now = Instant::now();
        let total = self.bytes.total();
        let elapsed = now.duration_since(self.last.0).as_secs_f64();
        let rate = if elapsed > 0.0 {
            (total.saturating_sub(self.last.1) as f64 / elapsed) as u64
        } else {
            0
        };
        self.last = (now, total);
        Telemetry {
            cpu_percent: self.system.global_cpu_usage(),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            temperature_celsius: temperature,
            staging_free_bytes: self.staging_free(),
            low_disk: self.low_disk(),
            bytes_per_second: rate,
            load_average_1m: System::load_average().one as f32,
            on_battery,
            // Self-yield's reading: the session adds it.
            self_yield: None,
        }
    }

    /// What this device offers, for registration.
    pub fn capabilities(
        &mut self,
        kinds: &[String],
        max_jobs: u32,
        bandwidth_cap: u64,
    ) -> Capabilities {
        Capabilities {
            arch: std::env::consts::ARCH.to_string(),
            os: std::env::consts::OS.to_string(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_bytes: self.system.total_memory(),
            staging_free_bytes: self.staging_free(),
            kinds: kinds.to_vec(),
            max_jobs,
            bandwidth_cap,
            agent_version: crate::VERSION.to_string(),
            // The device's own word, from agent.toml: the session sets it.
            device_class: String::new(),
            uplink: String::new(),
        }
    }
}

/// A small sysfs file's trimmed text.
fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The hottest thermal zone under `sysfs` (°C; the files hold millidegrees).
fn thermal_max(sysfs: &Path) -> Option<f32> {
    std::fs::read_dir(sysfs.join("class/thermal"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|e| read_trimmed(&e.path().join("temp"))?.parse::<f32>().ok())
        .map(|milli| milli / 1000.0)
        .filter(|t| t.is_finite())
        .reduce(f32::max)
}

/// Whether the device runs on battery: a battery discharging and no mains
/// (or USB) supply online. None without a battery.
fn on_battery(sysfs: &Path) -> Option<bool> {
    let (mut battery, mut discharging, mut mains) = (false, false, false);
    for supply in std::fs::read_dir(sysfs.join("class/power_supply"))
        .ok()?
        .flatten()
    {
        let dir = supply.path();
        match read_trimmed(&dir.join("type")).as_deref() {
            Some("Battery") => {
                battery = true;
                discharging |= read_trimmed(&dir.join("status")).as_deref() == Some("Discharging");
            }
            Some(_) => mains |= read_trimmed(&dir.join("online")).as_deref() == Some("1"),
            None => {}
        }
    }
    battery.then_some(discharging && !mains)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible_on_this_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = ByteCounter::default();
        let mut sampler = Sampler::new(dir.path(), bytes.clone());
        bytes.add(1_000_000);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = sampler.sample();
        assert!(t.memory_total_bytes > 0 && t.memory_used_bytes <= t.memory_total_bytes);
        assert!((0.0..=100.0).contains(&t.cpu_percent), "{}", t.cpu_percent);
        assert!(
            t.staging_free_bytes > 0,
            "no disk found for {:?}",
            dir.path()
        );
        assert!(t.bytes_per_second > 0, "throughput not counted");
        let caps = sampler.capabilities(&["file".into()], 2, 0);
        assert_eq!(caps.arch, std::env::consts::ARCH);
        assert!(caps.cores >= 1 && caps.memory_bytes > 0);
    }

    #[test]
    fn power_supplies_and_thermal_zones_are_read_from_sysfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |path: &str, text: &str| {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        assert_eq!(on_battery(dir.path()), None, "no supplies: cannot tell");
        put("class/power_supply/BAT0/type", "Battery\n");
        put("class/power_supply/BAT0/status", "Discharging\n");
        put("class/power_supply/AC/type", "Mains\n");
        put("class/power_supply/AC/online", "0\n");
        assert_eq!(on_battery(dir.path()), Some(true));
        put("class/power_supply/AC/online", "1\n");
        assert_eq!(on_battery(dir.path()), Some(false), "plugged in");
        put("class/thermal/thermal_zone0/temp", "48500\n");
        put("class/thermal/thermal_zone1/temp", "71250\n");
        assert_eq!(thermal_max(dir.path()), Some(71.25));
    }
}
