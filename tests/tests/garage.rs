//! The Garage harness (tests/src/garage.rs) itself: a real three-node
//! cluster on loopback stores an object put with the AWS CLI on every node,
//! so it still serves it, byte for byte, with the node that took the write
//! killed.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use ark_tests::garage::{Garage, BUCKET};
use ark_tests::write_sample;

#[tokio::test]
async fn a_three_node_garage_cluster_stores_and_serves_an_object_with_one_node_down() -> Result<()>
{
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    let mut garage = Garage::start(&tmp.path().join("garage")).await?;
    eprintln!("a healthy three-node cluster in {:?}", started.elapsed());

    let size = 10 << 20;
    let sample = tmp.path().join("sample.bin");
    write_sample(&sample, size)?;
    let url = format!("s3://{BUCKET}/big/sample.bin");
    garage.aws_ok(&["s3", "cp", &sample.to_string_lossy(), &url])?;

    // Node 1 took the write: the object is read back through node 2.
    garage.kill_node(0);
    let back = tmp.path().join("back.bin");
    garage.aws_ok(&["s3", "cp", &url, &back.to_string_lossy()])?;
    ensure!(
        std::fs::read(&sample)? == std::fs::read(&back)?,
        "the object came back different"
    );

    let listing: serde_json::Value =
        serde_json::from_str(&garage.aws_ok(&["s3api", "list-objects-v2", "--bucket", BUCKET])?)?;
    let objects = listing["Contents"].as_array().context("no Contents")?;
    ensure!(objects.len() == 1, "listing: {listing}");
    ensure!(objects[0]["Key"] == "big/sample.bin", "listing: {listing}");
    ensure!(objects[0]["Size"] == size, "listing: {listing}");
    Ok(())
}
