//! Generates the protobuf types (`proto/distlog.proto`, at the workspace's
//! root) with prost, compiled by protox (pure Rust: no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/distlog.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../proto"])?;
    prost_build::Config::new()
        // Values as `Bytes`: decoding a body held as `Bytes` slices it
        // instead of copying each record.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
