//! A headless Chromium driven through chromedriver with plain W3C
//! WebDriver calls (JSON over HTTP, reqwest): enough to load a page, find
//! elements by CSS, read their text and attributes, click, and take a
//! screenshot. Debian's
//! `chromium` and `chromium-driver` (see `scripts/setup.sh`).
//!
//! chromedriver runs in its own process group; dropping the [`Browser`]
//! ends the session and kills that group, so no Chromium outlives a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{free_port, wait_until};

/// The W3C key under which an element reference is returned.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs chromedriver; `ARK_CHROMEDRIVER` overrides it.
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("ARK_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// A chromedriver process with one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    /// Chromium's profile, removed with the browser.
    profile: tempfile::TempDir,
    /// Set once the process group is gone.
    stopped: bool,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session
    /// with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let driver_bin = chromedriver_path();
        if !driver_bin.exists() {
            bail!(
                "{} not found: apt-get install chromium chromium-driver (scripts/setup.sh)",
                driver_bin.display()
            );
        }
        ark_agent::link::install_crypto_provider();
        let port = free_port()?;
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", driver_bin.display()))?;
        let profile = tempfile::tempdir()?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            http,
            session: String::new(),
            driver,
            profile,
            stopped: false,
        };
        wait_until(Duration::from_secs(15), "chromedriver to listen", || {
            let http = browser.http.clone();
            let url = format!("{base}/status");
            async move {
                Ok(match http.get(url).send().await {
                    Ok(resp) => {
                        let body: Value = serde_json::from_slice(&resp.bytes().await?)?;
                        body["value"]["ready"].as_bool().unwrap_or(false)
                    }
                    Err(_) => false,
                })
            }
        })
        .await?;
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            }}
        });
        let created = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(capabilities),
            )
            .await
            .context("creating a Chromium session")?;
        let id = created["sessionId"]
            .as_str()
            .context("no sessionId in chromedriver's answer")?;
        browser.session = format!("{base}/session/{id}");
        Ok(browser)
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body)?);
        }
        let resp = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let body: Value = serde_json::from_slice(&resp.bytes().await?)
            .with_context(|| format!("{method} {url}: not JSON"))?;
        if !status.is_success() {
            bail!("{method} {url}: {status}: {}", body["value"]);
        }
        Ok(body["value"].clone())
    }

    async fn session_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    /// Loads `url` (returns when the page's load event fired).
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.session_call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await?;
        Ok(())
    }

    /// The page's current DOM, serialized (for a failing test's message).
    pub async fn source(&self) -> Result<String> {
        let source = self
            .session_call(reqwest::Method::GET, "/source", None)
            .await?;
        Ok(source.as_str().unwrap_or_default().to_string())
    }

    /// Every element matching the CSS `selector`.
    pub async fn find_all(&self, selector: &str) -> Result<Vec<String>> {
        let found = self
            .session_call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await?;
        Ok(found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The rendered text of the first element matching `selector`, None
    /// when there is none (or it went stale while being read: the page
    /// re-renders every second).
    pub async fn text(&self, selector: &str) -> Result<Option<String>> {
        let Some(element) = self.find_all(selector).await?.into_iter().next() else {
            return Ok(None);
        };
        match self
            .session_call(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await
        {
            Ok(text) => Ok(text.as_str().map(str::to_string)),
            Err(_) => Ok(None),
        }
    }

    /// The attribute `name` of every element matching `selector`, in
    /// document order (None where an element lacks it or went stale while
    /// being read).
    pub async fn attributes(&self, selector: &str, name: &str) -> Result<Vec<Option<String>>> {
        let mut values = Vec::new();
        for element in self.find_all(selector).await? {
            let value = self
                .session_call(
                    reqwest::Method::GET,
                    &format!("/element/{element}/attribute/{name}"),
                    None,
                )
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            values.push(value);
        }
        Ok(values)
    }

    /// Clicks the first element matching `selector`.
    pub async fn click(&self, selector: &str) -> Result<()> {
        let element = self
            .find_all(selector)
            .await?
            .into_iter()
            .next()
            .with_context(|| format!("no element matches {selector:?}"))?;
        self.session_call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let encoded = self
            .session_call(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let encoded = encoded.as_str().context("screenshot is not a string")?;
        use base64::Engine;
        Ok(base64::engine::general_purpose::STANDARD.decode(encoded)?)
    }

    /// Writes a PNG of the viewport to `path`.
    pub async fn save_screenshot(&self, path: &Path) -> Result<()> {
        let png = self.screenshot().await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn quit(mut self) -> Result<()> {
        let ended = self.session_call(reqwest::Method::DELETE, "", None).await;
        self.kill_group();
        ended.map(|_| ())
    }

    /// The chromedriver process (its id is its group's id).
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    fn kill_group(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        // chromedriver leads its own group: Chromium and its helpers are in
        // it, and nothing else is.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}
