//! Build script shared by every node crate (`build = "../voice_ros/link_python.rs"`).
//!
//! The PyPI ROS 2 wheels' librcl pulls in rosidl Python-binding libraries that
//! need CPython symbols: link libpython into the node executables and record an
//! rpath to it. Set by the bootstrap's env file; on a real ROS install
//! (VOICE_AGENT_PYTHON_LIBDIR unset) nothing is added.
pub fn main() {
    println!("cargo:rerun-if-env-changed=VOICE_AGENT_PYTHON_LIBDIR");
    let Ok(dir) = std::env::var("VOICE_AGENT_PYTHON_LIBDIR") else {
        return;
    };
    if dir.is_empty() || !std::path::Path::new(&dir).join("libpython3.11.so").exists() {
        return;
    }
    for arg in [
        format!("-L{dir}"),
        "-Wl,--no-as-needed".to_string(),
        "-lpython3.11".to_string(),
        "-Wl,--as-needed".to_string(),
        format!("-Wl,-rpath,{dir}"),
    ] {
        println!("cargo:rustc-link-arg={arg}");
    }
}
