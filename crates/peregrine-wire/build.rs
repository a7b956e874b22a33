//! Generates the Protobuf types from proto/peregrine.proto with prost. The schema is parsed by
//! protox (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/peregrine.proto");
    let descriptors = protox::compile(["proto/peregrine.proto"], ["proto"])?;
    prost_build::Config::new().btree_map(["."]).bytes(["."]).compile_fds(descriptors)?;
    Ok(())
}
