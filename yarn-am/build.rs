//! Generates the Hadoop RPC and YARN protocol messages from `proto/` with a pure-Rust protobuf
//! compiler, so building needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/RpcHeader.proto",
        "proto/IpcConnectionContext.proto",
        "proto/ProtobufRpcEngine.proto",
        "proto/Security.proto",
        "proto/yarn_protos.proto",
        "proto/yarn_service_protos.proto",
        "proto/applicationmaster_protocol.proto",
        "proto/containermanagement_protocol.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
