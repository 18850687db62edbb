//! stt_node's build script: libpython as for every node (see
//! ../voice_ros/link_python.rs), and `cfg(hri)` when ROS4HRI's hri_msgs is in
//! the ROS prefix r2r generates bindings from, so hri_msgs/LiveSpeech is
//! published exactly when its interface exists (the package still builds
//! without it; `live_speech_topic` then refuses to be set).

#[path = "../voice_ros/interfaces.rs"]
mod interfaces;
#[path = "../voice_ros/link_python.rs"]
mod link_python;

fn main() {
    link_python::main();
    interfaces::cfg_if_found("hri", "hri_msgs", "msg/LiveSpeech.idl");
}
