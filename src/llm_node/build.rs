//! llm_node's build script: libpython as for every node (see
//! ../voice_ros/link_python.rs), and `cfg(nav2)` when nav2_msgs is in the ROS
//! prefix r2r generates bindings from, so the NavigateToPose action client is
//! built exactly when its interface exists (a robot with Nav2 has it; the
//! package still builds without it, with `nav_mode: topic` only).

#[path = "../voice_ros/interfaces.rs"]
mod interfaces;
#[path = "../voice_ros/link_python.rs"]
mod link_python;

fn main() {
    link_python::main();
    interfaces::cfg_if_found("nav2", "nav2_msgs", "action/NavigateToPose.idl");
}
