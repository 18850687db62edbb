//! llm_node's build script: libpython as for every node (see
//! ../voice_ros/link_python.rs), and `cfg(nav2)` when nav2_msgs is in the ROS
//! prefix r2r generates bindings from, so the NavigateToPose action client is
//! built exactly when its interface exists (a robot with Nav2 has it; the
//! package still builds without it, with `nav_mode: topic` only).

#[path = "../voice_ros/link_python.rs"]
mod link_python;

fn main() {
    link_python::main();
    println!("cargo::rustc-check-cfg=cfg(nav2)");
    println!("cargo:rerun-if-env-changed=AMENT_PREFIX_PATH");
    println!("cargo:rerun-if-env-changed=IDL_PACKAGE_FILTER");
    // r2r generates only the packages in IDL_PACKAGE_FILTER when it is set
    let filtered_out = std::env::var("IDL_PACKAGE_FILTER")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .is_some_and(|f| !f.split(';').any(|p| p.trim() == "nav2_msgs"));
    let found = std::env::var("AMENT_PREFIX_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .any(|p| {
            std::path::Path::new(p)
                .join("share/nav2_msgs/action/NavigateToPose.idl")
                .exists()
        });
    if found && !filtered_out {
        println!("cargo:rustc-cfg=nav2");
    }
}
