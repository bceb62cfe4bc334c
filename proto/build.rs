//! Compiles `ark/v1/*.proto` with protox (a protobuf compiler written in
//! Rust), so building Ark never needs a `protoc` binary on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["ark/v1/ark.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    // An upload's pieces are `Bytes`: the commander's decoder hands on a
    // slice of its receive buffer instead of copying each piece out, and the
    // agent sends pieces read into buffers it reuses.
    tonic_prost_build::configure()
        .bytes(".ark.v1.UploadChunk")
        .compile_fds(descriptors)?;
    Ok(())
}
