//! Generates the gRPC code from `proto/grpc` (compiled by protox, so no `protoc` is needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto/grpc";
    let files = [
        "taskflow/identity/v1/identity.proto",
        "taskflow/tasks/v1/tasks.proto",
    ];
    println!("cargo:rerun-if-changed={root}");
    let descriptors = protox::compile(files, [root])?;
    tonic_prost_build::compile_fds(descriptors)?;
    Ok(())
}
