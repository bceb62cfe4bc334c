//! Who may talk to the commander. What belongs here: enrolment tokens,
//! client certificates, and an agent acting on leases that are not its own.
//! The commander runs in-process (a real TLS listener on loopback).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use ark_agent::identity::{Credentials, Identity};
use ark_agent::link;
use ark_commander::config::CommanderConfig;
use ark_commander::server::{self, Handle};
use ark_proto::agent_session_client::AgentSessionClient;
use ark_proto::*;
use tonic::transport::Channel;

async fn commander(dir: &Path) -> Result<Handle> {
    let config = CommanderConfig {
        heartbeat: ark_tests::TEST_HEARTBEAT,
        lease_ttl: ark_tests::TEST_LEASE_TTL,
        http: "off".into(),
        ..CommanderConfig::default()
    };
    Ok(server::spawn(dir, config, "127.0.0.1:0").await?)
}

async fn enrolled(c: &Handle, root: &Path, name: &str) -> Result<Identity> {
    let token = ark_tests::token(&c.data, name).await?;
    Ok(ark_agent::enroll::enroll(&c.url, &token.parse()?, &root.join(name)).await?)
}

fn session(url: &str, credentials: &Credentials) -> Result<AgentSessionClient<Channel>> {
    Ok(AgentSessionClient::new(link::channel(
        url,
        link::mtls_client_config(credentials)?,
    )?))
}

fn heartbeat(free_slots: u32) -> HeartbeatRequest {
    HeartbeatRequest {
        telemetry: Some(Telemetry::default()),
        free_slots,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_with_the_fix() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = commander(&tmp.path().join("c")).await?;
    // Trusts the commander, presents nothing: as enrolment does.
    let pin = link::fingerprint(
        &link::parse_certs(&std::fs::read_to_string(c.data.join("pki/ca.pem"))?, "ca")?[0],
    );
    let channel = link::channel(&c.url, link::pinned_client_config(&pin)?)?;
    let err = AgentSessionClient::new(channel.clone())
        .heartbeat(heartbeat(1))
        .await
        .expect_err("anonymous heartbeat accepted");
    ensure!(err.code() == tonic::Code::Unauthenticated, "{err:?}");
    ensure!(
        err.message().contains("ark-agent enroll"),
        "message does not name the fix: {}",
        err.message()
    );
    let err = ark_proto::admin_client::AdminClient::new(channel)
        .list_agents(ListAgentsRequest {})
        .await
        .expect_err("anonymous admin call accepted");
    ensure!(err.code() == tonic::Code::Unauthenticated, "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = commander(&tmp.path().join("c")).await?;
    // A second, unrelated commander's admin credentials.
    ark_commander::pki::Pki::load_or_create(&tmp.path().join("other"), &[])?;
    let foreign = ark_commander::pki::admin_credentials(&tmp.path().join("other"))?;
    let ours = ark_commander::pki::admin_credentials(&c.data)?;
    let credentials = Credentials {
        ca_pem: ours.ca_pem,
        ..foreign
    };
    let err = session(&c.url, &credentials)?
        .heartbeat(heartbeat(1))
        .await
        .expect_err("foreign certificate accepted");
    let err = ark_agent::AgentError::rpc("heartbeat", err);
    ensure!(
        matches!(
            err,
            ark_agent::AgentError::Link(ark_link::LinkError::CertificateRejected { .. })
        ),
        "{err}"
    );
    ensure!(err.to_string().contains("enrol again"), "{err}");
    // No trace of it as an agent.
    let agents = ark_tests::admin(&c.data)?
        .list_agents(ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    ensure!(agents.is_empty(), "{agents:?}");
    Ok(())
}

/// The commander follows the agent's cipher-suite order, so the agent's
/// CPU chooses the cipher of the upload it encrypts: AES-128-GCM where it
/// has AES instructions, ChaCha20-Poly1305 where it has none (a Pi 4).
#[tokio::test]
async fn the_agents_cpu_chooses_the_cipher() -> Result<()> {
    use rustls::CipherSuite;
    let tmp = tempfile::tempdir()?;
    let c = commander(&tmp.path().join("c")).await?;
    let a = enrolled(&c, tmp.path(), "pi").await?;
    let host = c.url.trim_start_matches("https://");
    for (aes, expected) in [
        (true, CipherSuite::TLS13_AES_128_GCM_SHA256),
        (false, CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
    ] {
        let mut provider = rustls::crypto::ring::default_provider();
        link::by_this_cpu(&mut provider.cipher_suites, aes);
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(link::parse_certs(&a.credentials.ca_pem, "ca")?);
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                link::parse_certs(&a.credentials.cert_pem, "cert")?,
                link::parse_key(&a.credentials.key_pem, "key")?,
            )?;
        let tcp = tokio::net::TcpStream::connect(host).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?;
        let chosen = tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
        ensure!(
            chosen == Some(expected),
            "with AES instructions {aes}: {chosen:?}"
        );
    }
    // And this machine's own order puts a TLS 1.3 suite it runs fast first.
    let ours = link::provider().cipher_suites[0].suite();
    let fast = match link::aes_in_hardware() {
        true => CipherSuite::TLS13_AES_128_GCM_SHA256,
        false => CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    };
    ensure!(ours == fast, "{ours:?}");
    Ok(())
}

#[tokio::test]
async fn tokens_work_once_expire_and_pin_the_commander() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = commander(&tmp.path().join("c")).await?;
    let token: ark_agent::enroll::EnrollToken = ark_tests::token(&c.data, "once").await?.parse()?;
    ark_agent::enroll::enroll(&c.url, &token, &tmp.path().join("first")).await?;
    let err = ark_agent::enroll::enroll(&c.url, &token, &tmp.path().join("second"))
        .await
        .expect_err("token reused");
    ensure!(err.to_string().contains("already been used"), "{err}");
    ensure!(
        !tmp.path().join("second/identity/cert.pem").exists(),
        "a refused enrolment left an identity"
    );

    let short = ark_tests::admin(&c.data)?
        .create_enroll_token(CreateEnrollTokenRequest {
            agent_name: "late".into(),
            ttl_ms: 1,
        })
        .await?
        .into_inner()
        .token;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = ark_agent::enroll::enroll(&c.url, &short.parse()?, &tmp.path().join("late"))
        .await
        .expect_err("expired token accepted");
    ensure!(err.to_string().contains("expired"), "{err}");

    // A token whose pin is not this commander's CA: the secret never leaves.
    let fresh: ark_agent::enroll::EnrollToken =
        ark_tests::token(&c.data, "pinned").await?.parse()?;
    let wrong_pin = ark_agent::enroll::EnrollToken {
        ca_pin: "00".repeat(32),
        ..fresh.clone()
    };
    let err = ark_agent::enroll::enroll(&c.url, &wrong_pin, &tmp.path().join("pinned"))
        .await
        .expect_err("wrong pin accepted");
    ensure!(!err.is_refusal(), "the commander saw the request: {err}");
    // ...so the real token is still unused.
    ark_agent::enroll::enroll(&c.url, &fresh, &tmp.path().join("pinned")).await?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tmp.path().join("pinned/identity/key.pem"))?.permissions(),
    );
    ensure!(mode & 0o777 == 0o600, "key mode {mode:o}");
    Ok(())
}

#[tokio::test]
async fn an_agent_acts_only_on_its_own_current_lease_and_is_no_admin() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = commander(&tmp.path().join("c")).await?;
    let a = enrolled(&c, tmp.path(), "a").await?;
    let b = enrolled(&c, tmp.path(), "b").await?;
    let (mut sa, mut sb) = (
        session(&c.url, &a.credentials)?,
        session(&c.url, &b.credentials)?,
    );
    ark_tests::add_file_target(&c.data, "t", "http://127.0.0.1:9/t").await?;
    let mut lease = None;
    for _ in 0..50 {
        lease = sa.heartbeat(heartbeat(1)).await?.into_inner().leases.pop();
        if lease.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease = lease.expect("agent a got no lease");
    let progress = |generation: u64| ProgressRequest {
        lease: Some(LeaseRef {
            run_id: lease.run_id,
            generation,
        }),
        bytes_done: 1,
        ..ProgressRequest::default()
    };
    let err = sb
        .report_progress(progress(lease.generation))
        .await
        .expect_err("b renewed a's lease");
    ensure!(err.code() == tonic::Code::PermissionDenied, "{err:?}");
    let err = sa
        .report_progress(progress(lease.generation + 1))
        .await
        .expect_err("future generation");
    ensure!(err.code() == tonic::Code::FailedPrecondition, "{err:?}");
    let ttl = sa
        .report_progress(progress(lease.generation))
        .await?
        .into_inner()
        .ttl_ms;
    ensure!(ttl == ark_tests::TEST_LEASE_TTL.as_millis() as u64);
    // A body cannot be claimed by a report: it must be uploaded and verified.
    let claimed = CompleteRequest {
        lease: Some(LeaseRef::of(&lease)),
        outcome: Some(complete_request::Outcome::Success(JobResult {
            size_bytes: 5,
            blake3: blake3::hash(b"hello").to_hex().to_string(),
            ..JobResult::default()
        })),
    };
    let err = sa
        .complete(claimed)
        .await
        .expect_err("a claimed body was accepted");
    ensure!(
        err.code() == tonic::Code::InvalidArgument && err.message().contains("Have and Upload"),
        "{err:?}"
    );
    // A manifest must carry the agent's own signature and the run's facts.
    let manifest = |url: &str| ark_core::manifest::Manifest {
        format: ark_core::manifest::FORMAT,
        agent: "a".into(),
        run_id: lease.run_id,
        generation: lease.generation,
        target: "t".into(),
        kind: "file".into(),
        url: url.into(),
        size: 5,
        blake3: blake3::hash(b"hello").to_hex().to_string(),
        digests: Default::default(),
        digest_source: String::new(),
        etag: String::new(),
        last_modified: String::new(),
        fetch_started_ms: 0,
        fetch_finished_ms: 0,
        resumes: 0,
        restarts: 0,
        refs: Default::default(),
    };
    let run_url = lease.job.clone().unwrap_or_default().url;
    let stranger = rcgen::KeyPair::generate()?.serialize_pem();
    for (signed_by, url, code) in [
        (
            stranger.as_str(),
            run_url.as_str(),
            tonic::Code::PermissionDenied,
        ),
        (
            a.credentials.key_pem.as_str(),
            "http://elsewhere/evil.bin",
            tonic::Code::InvalidArgument,
        ),
    ] {
        let (bytes, signature) = manifest(url).sign(signed_by)?;
        let err = sa
            .have(ark_proto::HaveRequest {
                lease: Some(LeaseRef::of(&lease)),
                manifest: bytes,
                signature,
            })
            .await
            .expect_err("a forged manifest was accepted");
        ensure!(err.code() == code, "{url}: {err:?}");
    }
    let forged = CompleteRequest {
        lease: Some(LeaseRef::of(&lease)),
        outcome: Some(complete_request::Outcome::Success(JobResult {
            unchanged: true,
            ..JobResult::default()
        })),
    };
    let err = sb
        .complete(forged.clone())
        .await
        .expect_err("b completed a's run");
    ensure!(err.code() == tonic::Code::PermissionDenied, "{err:?}");
    sa.complete(forged.clone()).await?;
    let err = sa.complete(forged).await.expect_err("completed twice");
    ensure!(err.code() == tonic::Code::FailedPrecondition, "{err:?}");

    // An agent's certificate opens no admin door.
    let channel = link::channel(&c.url, link::mtls_client_config(&a.credentials)?)?;
    let err = ark_proto::admin_client::AdminClient::new(channel)
        .pause(PauseRequest::default())
        .await
        .expect_err("agent paused the swarm");
    ensure!(err.code() == tonic::Code::PermissionDenied, "{err:?}");
    Ok(())
}
