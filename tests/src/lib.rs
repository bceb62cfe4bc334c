//! The whole-swarm test harness: real commanders and agents (as processes
//! from the built binaries, or in-process through the libraries), a local
//! origin, temp data dirs, and small helpers to wait for the swarm to reach
//! a state. Every test module in `tests/` builds on these.
//!
//! Binaries are found next to the test executable (`target/<profile>/`);
//! `ARK_AGENT_BIN` / `ARK_COMMANDER_BIN` override them and `ARK_AGENT_RUNNER`
//! (e.g. `qemu-aarch64-static`) runs the agent under an emulator.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ark_proto::admin_client::AdminClient;
use ark_proto::{CreateEnrollTokenRequest, Event, ListEventsRequest, ListRunsRequest, RunInfo};
use tonic::transport::Channel;

pub use ark_demo::origin::{Hostile, Origin};

pub use ark_demo::git_origin::{self, free_port};
pub use disk::SmallDisk;
pub mod disk;
pub mod forge;
pub mod garage;
pub mod lan;
pub mod netns;
pub mod sshd;
pub mod webdriver;

/// Timings every swarm test uses: short enough for quick tests, with the
/// same ratio as production (TTL = 6 heartbeats).
pub const TEST_HEARTBEAT: Duration = Duration::from_millis(500);
pub const TEST_LEASE_TTL: Duration = Duration::from_secs(3);

/// The destinations a test fetch may reach: public addresses and loopback,
/// where every test origin listens (the default guard refuses it, as it
/// refuses the whole household network).
pub fn loopback_guard() -> ark_agent::destination::Guard {
    ark_agent::destination::Guard::allowing(&["127.0.0.0/8", "::1/128"])
}

/// Default fetch limits with [`loopback_guard`].
pub fn loopback_limits() -> ark_agent::fetch::Limits {
    ark_agent::fetch::Limits {
        guard: loopback_guard(),
        ..Default::default()
    }
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> Result<PathBuf> {
    let var = format!("ARK_{}_BIN", name.trim_start_matches("ark-").to_uppercase());
    if let Ok(path) = std::env::var(&var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no parent")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first (`cargo build --bins`), or set {var}",
            path.display()
        );
    }
    Ok(path)
}

/// A child process that is killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawns `cmd` with its stderr in `log`; killed when the `Proc` drops.
pub fn spawn_logged(mut cmd: Command, log: PathBuf) -> Result<Proc> {
    let file = std::fs::File::create(&log)?;
    cmd.stdout(Stdio::null())
        .stderr(file)
        .env("ARK_LOG", "info");
    let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    Ok(Proc { child, log })
}

/// The agent command, under `ARK_AGENT_RUNNER` when set.
pub fn agent_command() -> Result<Command> {
    let agent = bin("ark-agent")?;
    Ok(match std::env::var("ARK_AGENT_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut cmd = Command::new(runner);
            cmd.arg(agent);
            cmd
        }
        _ => Command::new(agent),
    })
}

/// Writes a commander.toml with the test timings, and the dashboard off
/// (tests that want it pass `--http 127.0.0.1:0`), so parallel commanders
/// never contend for its default port.
pub fn write_commander_config(data: &Path) -> Result<()> {
    write_commander_config_with(data, "")
}

/// [`write_commander_config`] with more TOML after the test timings (e.g.
/// a `[fetch]` table).
pub fn write_commander_config_with(data: &Path, extra: &str) -> Result<()> {
    write_commander_config_ttl(data, TEST_LEASE_TTL, extra)
}

/// [`write_commander_config_with`] with leases lasting `lease_ttl`.
pub fn write_commander_config_ttl(data: &Path, lease_ttl: Duration, extra: &str) -> Result<()> {
    std::fs::create_dir_all(data)?;
    std::fs::write(
        data.join("commander.toml"),
        format!(
            "lease-ttl = \"{}ms\"\nheartbeat = \"{}ms\"\nretry-backoff = \"1s\"\nhttp = \"off\"\n{extra}",
            lease_ttl.as_millis(),
            TEST_HEARTBEAT.as_millis()
        ),
    )?;
    Ok(())
}

/// Starts `ark-commander serve` on `listen` and waits until it is up.
pub async fn spawn_commander(data: &Path, listen: &str) -> Result<Proc> {
    spawn_commander_with(data, listen, &[], &[]).await
}

/// Like [`spawn_commander`], with extra `serve` flags and environment.
pub async fn spawn_commander_with(
    data: &Path,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Proc> {
    write_commander_config(data)?;
    start_commander(data, listen, args, env).await
}

/// Starts `ark-commander serve` with the `commander.toml` already in
/// `data` (see [`write_commander_config_with`]).
pub async fn start_commander(
    data: &Path,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Proc> {
    start_commander_on(None, data, listen, args, env).await
}

/// [`start_commander`] inside `device`'s network namespace (`None`: this
/// one).
pub async fn start_commander_on(
    device: Option<&lan::Device>,
    data: &Path,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Proc> {
    let endpoint = data.join("endpoint");
    let _ = std::fs::remove_file(&endpoint);
    let program = bin("ark-commander")?;
    let mut cmd = match device {
        Some(device) => device.command(&program),
        None => Command::new(program),
    };
    cmd.arg("--data")
        .arg(data)
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .args(args)
        .envs(env.iter().copied());
    let mut proc = spawn_logged(cmd, data.with_extension("log"))?;
    wait_until(Duration::from_secs(20), "commander start", || {
        let ok = endpoint.exists();
        async move { Ok(ok) }
    })
    .await
    .with_context(|| proc.log_text())?;
    if let Ok(Some(status)) = proc.child.try_wait() {
        bail!("commander exited: {status}\n{}", proc.log_text());
    }
    Ok(proc)
}

/// Waits until a commander started with `ARK_FAULT_CRASH_AT=step` has
/// aborted at that step of landing (and not somewhere else).
pub async fn wait_for_abort(commander: &mut Proc, step: &str, timeout: Duration) -> Result<()> {
    wait_until(timeout, "the commander to abort mid-landing", || {
        let exited = commander.exited();
        async move { Ok(exited) }
    })
    .await?;
    if !commander
        .log_text()
        .contains(&format!("aborting at landing step \"{step}\""))
    {
        bail!("the commander died elsewhere:\n{}", commander.log_text());
    }
    Ok(())
}

/// The running commander's admin client.
pub fn admin(data: &Path) -> Result<AdminClient<Channel>> {
    Ok(ark_commander::admin::connect(data, None)?)
}

/// Issues a one-time token for `name`.
pub async fn token(commander_data: &Path, name: &str) -> Result<String> {
    Ok(admin(commander_data)?
        .create_enroll_token(CreateEnrollTokenRequest {
            agent_name: name.into(),
            ttl_ms: 0,
        })
        .await?
        .into_inner()
        .token)
}

/// Enrolls agent `name` in `agent_data` and starts it ([`enroll_agent`],
/// then [`spawn_agent`]).
pub async fn enrolled_agent(commander_data: &Path, agent_data: &Path, name: &str) -> Result<Proc> {
    enroll_agent(commander_data, agent_data, name).await?;
    spawn_agent(agent_data)
}

/// Enrols an agent through the real `ark-agent enroll` binary.
pub async fn enroll_agent(commander_data: &Path, agent_data: &Path, name: &str) -> Result<()> {
    let token = token(commander_data, name).await?;
    let url = ark_commander::server::endpoint(commander_data)?;
    let out = agent_command()?
        .arg("--data")
        .arg(agent_data)
        .args(["enroll", "--commander", &url, "--token", &token])
        .output()?;
    if !out.status.success() {
        bail!(
            "ark-agent enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Starts `ark-agent run`.
pub fn spawn_agent(agent_data: &Path) -> Result<Proc> {
    spawn_agent_with(agent_data, &[])
}

/// Starts `ark-agent run` with extra environment (fault-injection hooks).
pub fn spawn_agent_with(agent_data: &Path, env: &[(&str, &str)]) -> Result<Proc> {
    spawn_agent_on(None, agent_data, env)
}

/// [`spawn_agent_with`] inside `device`'s network namespace (`None`: this
/// one).
pub fn spawn_agent_on(
    device: Option<&lan::Device>,
    agent_data: &Path,
    env: &[(&str, &str)],
) -> Result<Proc> {
    let mut cmd = match device {
        Some(device) => device.command(&bin("ark-agent")?),
        None => agent_command()?,
    };
    cmd.arg("--data")
        .arg(agent_data)
        .arg("run")
        .envs(env.iter().copied());
    spawn_logged(cmd, agent_data.with_extension("log"))
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn runs(commander_data: &Path) -> Result<Vec<RunInfo>> {
    Ok(admin(commander_data)?
        .list_runs(ListRunsRequest { limit: 1000 })
        .await?
        .into_inner()
        .runs)
}

pub async fn run(commander_data: &Path, id: i64) -> Result<RunInfo> {
    runs(commander_data)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .with_context(|| format!("no run {id}"))
}

pub async fn events(commander_data: &Path, run_id: i64) -> Result<Vec<Event>> {
    Ok(admin(commander_data)?
        .list_events(ListEventsRequest {
            run_id,
            limit: 1000,
        })
        .await?
        .into_inner()
        .events)
}

/// The smallest swarm: a commander in `dir/commander` and one agent named
/// `agent`, enrolled and running. Returns (commander data dir, commander,
/// agent); the processes stop when dropped.
pub async fn swarm_of_one(dir: &Path, agent: &str) -> Result<(PathBuf, Proc, Proc)> {
    let cdata = dir.join("commander");
    let commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let adata = dir.join(agent);
    enroll_agent(&cdata, &adata, agent).await?;
    let agent = spawn_agent(&adata)?;
    Ok((cdata, commander, agent))
}

/// Adds a `file` target.
pub async fn add_file_target(commander_data: &Path, name: &str, url: &str) -> Result<()> {
    add_file_target_keeping(commander_data, name, url, 0).await
}

/// Adds a `file` target that keeps `keep` versions (0: the default).
pub async fn add_file_target_keeping(
    commander_data: &Path,
    name: &str,
    url: &str,
    keep: u32,
) -> Result<()> {
    add_target_with(
        commander_data,
        ark_proto::AddTargetRequest {
            keep,
            ..file_target(name, url)
        },
    )
    .await
}

/// A `file` target named `name` on `url`, for a caller to set more on.
pub fn file_target(name: &str, url: &str) -> ark_proto::AddTargetRequest {
    ark_proto::AddTargetRequest {
        kind: "file".into(),
        url: url.into(),
        name: name.into(),
        ..Default::default()
    }
}

/// Adds a target of any kind (`max_size` 0 = the default).
pub async fn add_target(
    commander_data: &Path,
    kind: &str,
    name: &str,
    url: &str,
    max_size: u64,
) -> Result<()> {
    add_target_with(
        commander_data,
        ark_proto::AddTargetRequest {
            kind: kind.into(),
            url: url.into(),
            name: name.into(),
            max_size,
            ..Default::default()
        },
    )
    .await
}

pub async fn add_target_with(
    commander_data: &Path,
    target: ark_proto::AddTargetRequest,
) -> Result<()> {
    admin(commander_data)?.add_target(target).await?;
    Ok(())
}

/// The files directly in `dir` whose name passes `keep`, sorted by name,
/// with their bytes.
pub fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Every `*.part` file staged under an agent's data dir, with its bytes.
pub fn staged_files(agent_data: &Path) -> Vec<(String, Vec<u8>)> {
    files_in(&agent_data.join("staging"), |name| name.ends_with(".part"))
}

/// The id of `target`'s newest run of its own (not one of the runs it
/// derived, a feed's enclosures), waiting for the scheduler to queue it.
pub async fn run_of(commander_data: &Path, target: &str) -> Result<i64> {
    let mut id = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let derived = ark_core::Kind::Media.as_str();
    while id.is_none() {
        id = runs(commander_data)
            .await?
            .iter()
            .find(|r| r.target == target && r.kind != derived)
            .map(|r| r.id);
        if Instant::now() >= deadline {
            bail!("no run of {target} was queued");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(id.unwrap_or_default())
}

/// A commander process on a fixed loopback port (so it can come back on the
/// same address), one agent process, and a throttled origin serving one file
/// whose run is already leased: the set-up of every "something goes away in
/// the middle of a job" test.
#[derive(Debug)]
pub struct SlowJob {
    pub cdata: PathBuf,
    pub adata: PathBuf,
    pub listen: String,
    pub commander: Proc,
    pub agent: Proc,
    pub origin: Origin,
    pub run_id: i64,
}

impl SlowJob {
    /// Starts everything and waits until the agent holds the run's lease.
    pub async fn start(root: &Path, size: usize, bytes_per_second: u64) -> Result<Self> {
        let cdata = root.join("commander");
        let listen = format!("127.0.0.1:{}", free_port()?);
        let commander = spawn_commander(&cdata, &listen).await?;
        let origin = Origin::start().await?;
        origin.put("slow.bin", ark_demo::sample_bytes(size, 9));
        origin.throttle(bytes_per_second);
        let adata = root.join("worker");
        enroll_agent(&cdata, &adata, "worker").await?;
        let agent = spawn_agent(&adata)?;
        add_file_target(&cdata, "slow", &origin.url("slow.bin")).await?;
        let run_id = run_of(&cdata, "slow").await?;
        wait_until(Duration::from_secs(30), "the run to be leased", || {
            let cdata = cdata.clone();
            async move { Ok(run(&cdata, run_id).await?.state == "leased") }
        })
        .await?;
        Ok(Self {
            cdata,
            adata,
            listen,
            commander,
            agent,
            origin,
            run_id,
        })
    }

    /// The agent's persisted lease for the run.
    pub fn lease_file(&self) -> PathBuf {
        self.adata
            .join("leases")
            .join(format!("{}.json", self.run_id))
    }
}

/// What `b3sum` (the independent BLAKE3 oracle) says of a file.
pub fn b3sum(path: &Path) -> Result<String> {
    let out = Command::new("b3sum")
        .arg("--no-names")
        .arg(path)
        .output()
        .map_err(|e| anyhow::anyhow!("b3sum: {e} (apt-get install b3sum)"))?;
    ensure!(out.status.success(), "b3sum {}: {:?}", path.display(), out);
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// `size` bytes at `path` no compressor or dedupe can shortcut.
pub fn write_sample(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let mut n = 0u64;
    while written < size {
        let seed = blake3::hash(&n.to_le_bytes());
        let mut xof = blake3::Hasher::new_keyed(seed.as_bytes()).finalize_xof();
        xof.fill(&mut block);
        let take = (size - written).min(1 << 20) as usize;
        out.write_all(&block[..take])?;
        written += take as u64;
        n += 1;
    }
    out.flush()?;
    Ok(())
}

/// A TCP relay on loopback in front of `upstream` that counts the bytes
/// each way: what agents send a commander, what an origin sends agents.
#[derive(Debug)]
pub struct CountingRelay {
    pub addr: std::net::SocketAddr,
    /// Bytes from clients to `upstream`, and from `upstream` to clients.
    counts: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingRelay {
    pub async fn start(upstream: std::net::SocketAddr) -> Result<Self> {
        Self::start_at("127.0.0.1:0".parse()?, upstream).await
    }

    /// A relay listening on `listen` (e.g. a [`lan::Lan`]'s gateway, port
    /// 0): how devices in namespaces reach an origin that listens on this
    /// namespace's loopback.
    pub async fn start_at(
        listen: std::net::SocketAddr,
        upstream: std::net::SocketAddr,
    ) -> Result<Self> {
        use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
        /// Copies `from` to `to`, counting into `count`.
        async fn pump(
            mut from: impl AsyncRead + Unpin,
            mut to: impl AsyncWrite + Unpin,
            count: &std::sync::atomic::AtomicU64,
        ) {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            let _ = to.shutdown().await;
        }
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let counts: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]> = Default::default();
        let counted = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counts = counted.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, &counts[0]), pump(sr, cw, &counts[1]));
                });
            }
        });
        Ok(Self { addr, counts, task })
    }

    /// Bytes clients sent upstream so far.
    pub fn sent(&self) -> u64 {
        self.counts[0].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes upstream sent clients so far.
    pub fn received(&self) -> u64 {
        self.counts[1].load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A TCP proxy on loopback in front of `upstream` that cuts the first
/// `cuts` connections after `after` bytes of response: a network drop in
/// front of a real server (nginx) that cannot be told to drop by itself.
#[derive(Debug)]
pub struct CuttingProxy {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CuttingProxy {
    pub async fn start(upstream: std::net::SocketAddr, after: u64, cuts: u64) -> Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let left = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(cuts));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = left
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upload = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = if cut {
                            n.min((after - sent) as usize)
                        } else {
                            n
                        };
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n as u64;
                        if cut && sent >= after {
                            break;
                        }
                    }
                    upload.abort();
                });
            }
        });
        Ok(Self { addr, task })
    }
}

/// nginx (Debian's) serving `root` on a free loopback port, stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    pub addr: std::net::SocketAddr,
    pub dir: PathBuf,
    proc: Proc,
}

impl Nginx {
    pub async fn start(dir: &Path, root: &Path) -> Result<Self> {
        Self::start_with(dir, root, "").await
    }

    /// [`Nginx::start`] with more directives in its `server` block (e.g.
    /// `autoindex on;` for a Kiwix-style mirror directory).
    pub async fn start_with(dir: &Path, root: &Path, directives: &str) -> Result<Self> {
        let port = free_port()?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        Self::start_at(dir, root, directives, addr, None).await
    }

    /// nginx listening on `addr` inside network namespace `netns` (see
    /// [`netns::Netns`]), with more directives in its `server` block.
    pub async fn start_in(
        dir: &Path,
        root: &Path,
        directives: &str,
        addr: std::net::SocketAddr,
        netns: &str,
    ) -> Result<Self> {
        Self::start_at(dir, root, directives, addr, Some(netns)).await
    }

    async fn start_at(
        dir: &Path,
        root: &Path,
        directives: &str,
        addr: std::net::SocketAddr,
        netns: Option<&str>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n\
               log_format ark '$remote_addr $request_method $uri $status $body_bytes_sent \"$http_range\"';\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               default_type application/octet-stream;\n\
               server {{ listen {addr}; root {root}; {directives} }}\n}}\n",
            root = root.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists() || which(p))
            .context("nginx not found (apt-get install nginx-light)")?;
        // `ip netns exec` execs nginx in place: the pid stays nginx's.
        let mut cmd = match netns {
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns, nginx]);
                cmd
            }
            None => Command::new(nginx),
        };
        cmd.arg("-p").arg(dir).arg("-c").arg(&conf_path);
        let proc = spawn_logged(cmd, dir.join("stderr.log"))?;
        wait_until(Duration::from_secs(10), "nginx to listen", || async move {
            Ok(tokio::net::TcpStream::connect(addr).await.is_ok())
        })
        .await
        .with_context(|| std::fs::read_to_string(dir.join("error.log")).unwrap_or_default())?;
        Ok(Self {
            addr,
            dir: dir.to_path_buf(),
            proc,
        })
    }

    /// nginx's access log: one line per request it served.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

impl Drop for Nginx {
    /// A graceful-enough stop (TERM: the master stops its workers), so no
    /// orphaned worker keeps the port; the `Proc` then makes sure.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.proc.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.proc.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).exists()))
}

/// `run-now` for `target`; returns the run's id.
pub async fn run_now(commander_data: &Path, target: &str) -> Result<i64> {
    Ok(admin(commander_data)?
        .run_now(ark_proto::RunNowRequest {
            name: target.into(),
        })
        .await?
        .into_inner()
        .id)
}

/// Waits until run `run_id` is in `state`; returns it then.
pub async fn wait_for_run(
    commander_data: &Path,
    run_id: i64,
    state: &str,
    timeout: Duration,
) -> Result<RunInfo> {
    let what = format!("run {run_id} to be {state}");
    wait_until(timeout, &what, || async move {
        Ok(run(commander_data, run_id).await?.state == state)
    })
    .await?;
    run(commander_data, run_id).await
}

/// The first event of `kind` on run `run_id`.
pub async fn event_of(commander_data: &Path, run_id: i64, kind: &str) -> Result<Event> {
    events(commander_data, run_id)
        .await?
        .into_iter()
        .find(|e| e.kind == kind)
        .with_context(|| format!("no {kind} event on run {run_id}"))
}

/// Waits (up to 40 s) for the first event of `kind` on `run`; the run's
/// events when it never comes.
pub async fn wait_for_event(commander_data: &Path, run: i64, kind: &str) -> Result<Event> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(event) = event_of(commander_data, run, kind).await {
            return Ok(event);
        }
        if Instant::now() > deadline {
            bail!(
                "no {kind} event on run {run}: {:?}",
                events(commander_data, run).await?
            );
        }
        tokio::time::sleep(TEST_HEARTBEAT).await;
    }
}

/// Waits until `n` agents are online (registered and heartbeating).
pub async fn wait_for_agents_online(commander_data: &Path, n: usize) -> Result<()> {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} agents online"),
        || async move {
            let online = agents(commander_data)
                .await?
                .iter()
                .filter(|a| a.state == "online")
                .count();
            Ok(online == n)
        },
    )
    .await
}

/// Serves `library` (a Kiwix library.xml) with the real `kiwix-serve` on a
/// free loopback port and GETs each of `paths`; their status and body.
pub async fn kiwix_serve_get(
    library: &Path,
    paths: &[&str],
) -> Result<Vec<(reqwest::StatusCode, String)>> {
    let port = free_port()?;
    let mut kiwix = Command::new("kiwix-serve")
        .arg("--library")
        .arg(library)
        .args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("kiwix-serve (apt-get install kiwix-tools)")?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let served = async {
        wait_until(Duration::from_secs(10), "kiwix-serve to listen", || {
            let url = format!("{base}/catalog/v2/entries");
            let http = http.clone();
            async move { Ok(http.get(url).send().await.is_ok()) }
        })
        .await?;
        let mut answers = Vec::new();
        for path in paths {
            let page = http.get(format!("{base}{path}")).send().await?;
            let status = page.status();
            answers.push((status, page.text().await?));
        }
        Ok::<_, anyhow::Error>(answers)
    }
    .await;
    let _ = kiwix.kill();
    let _ = kiwix.wait();
    served
}

/// A ZIM's UUID (header bytes 8..24) as Kiwix writes it in library.xml and
/// its OPDS catalog: written here, apart from the commander's, as the
/// tests' oracle.
pub fn zim_uuid(zim: &[u8]) -> String {
    let u = &zim[8..24];
    let h = |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// Every agent the commander knows.
pub async fn agents(commander_data: &Path) -> Result<Vec<ark_proto::AgentInfo>> {
    Ok(admin(commander_data)?
        .list_agents(ark_proto::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents)
}

/// Every landed file in a commander's archive (relative path, bytes),
/// without the manifests, the Kiwix library, the index and the quarantine.
pub fn archive_files(commander_data: &Path) -> Vec<(String, Vec<u8>)> {
    let root = commander_data.join("archive");
    ark_commander::archive::walk_files(&root)
        .into_iter()
        .filter(|path| {
            let name = path.to_string_lossy();
            !name.ends_with(".manifest.json")
                && !name.ends_with("zim/library.xml")
                && path != &root.join(ark_commander::archive::INDEX_FILE)
        })
        .map(|path| {
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            (
                relative.display().to_string(),
                std::fs::read(&path).unwrap_or_default(),
            )
        })
        .collect()
}

/// Files in the commander's quarantine (names).
pub fn quarantined(commander_data: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(commander_data.join("archive/.ark/quarantine")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `ark-commander --data DATA ARGS…` (the real binary); returns
/// (exit success, stdout, stderr).
pub fn commander_cli(commander_data: &Path, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(bin("ark-commander")?)
        .arg("--data")
        .arg(commander_data)
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `ark-commander archive ls --json`, parsed.
pub fn archive_ls(commander_data: &Path) -> Result<Vec<serde_json::Value>> {
    let (ok, stdout, stderr) = commander_cli(commander_data, &["archive", "ls", "--json"])?;
    if !ok {
        bail!("archive ls failed: {stderr}");
    }
    Ok(serde_json::from_str(&stdout)?)
}

/// The Kiwix ZIM fixtures (openzim's test suite): `$ARK_ZIM_FIXTURES`, else
/// `../shared/fixtures/zim` beside the repository, else the machine's shared
/// copy at `/work/shared/fixtures/zim`.
pub fn zim_fixtures() -> Result<PathBuf> {
    let candidates = [
        std::env::var_os("ARK_ZIM_FIXTURES").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/zim")),
        Some(PathBuf::from("/work/shared/fixtures/zim")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("small.zim").exists())
        .context("ZIM fixtures not found: set ARK_ZIM_FIXTURES to the directory holding small.zim")
}

/// Writes a fake sysfs under `root` (an agent reads it with `sysfs = ROOT`
/// in its agent.toml): one thermal zone at `celsius`, and a battery that
/// is discharging (with the mains offline) when `on_battery`.
pub fn fake_sysfs(root: &Path, celsius: f32, on_battery: bool) -> Result<()> {
    let put = |path: &str, text: String| -> Result<()> {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(root))?;
        std::fs::write(p, text)?;
        Ok(())
    };
    put(
        "class/thermal/thermal_zone0/temp",
        format!("{}\n", (celsius * 1000.0) as i64),
    )?;
    put("class/power_supply/BAT0/type", "Battery\n".into())?;
    let status = if on_battery {
        "Discharging"
    } else {
        "Charging"
    };
    put("class/power_supply/BAT0/status", format!("{status}\n"))?;
    put("class/power_supply/AC/type", "Mains\n".into())?;
    put(
        "class/power_supply/AC/online",
        format!("{}\n", u8::from(!on_battery)),
    )?;
    Ok(())
}
