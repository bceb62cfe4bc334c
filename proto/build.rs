//! Compiles `ark/v1/*.proto` with protox (a protobuf compiler written in
//! Rust), so building Ark never needs a `protoc` binary on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["ark/v1/ark.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
