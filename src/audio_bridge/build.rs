//! audio_bridge's build script: libpython (../voice_ros/link_python.rs) and
//! `cfg(audio_common)` when audio_common_msgs is in the ROS prefix.

#[path = "../voice_ros/interfaces.rs"]
mod interfaces;
#[path = "../voice_ros/link_python.rs"]
mod link_python;

fn main() {
    link_python::main();
    interfaces::cfg_if_found(
        "audio_common",
        "audio_common_msgs",
        "msg/AudioDataStamped.idl",
    );
}
