"""The voice pipeline: stt_node -> llm_node -> tts_node with a config profile,
and with mic:=true audio_node (the robot's microphone and speaker, with echo
cancellation; barge-in on).

Same nodes, arguments and defaults as voice_agent.launch.xml:
    ros2 launch voice_agent voice_agent.launch.py profile:=jetson_orin_nx_3b namespace:=robot1
    ros2 launch voice_agent voice_agent.launch.py places_file:=/path/to/my_places.yaml \
        battery_topic:=battery_state pose_topic:=amcl_pose
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterFile, ParameterValue

ARGS = [
    ("profile", "cpu_small", "parameter profile: config/PROFILE.yaml (cpu_small | jetson_orin_nx_3b)"),
    ("namespace", "", "namespace for all nodes and topics"),
    ("models_dir", os.path.join(os.path.expanduser("~"), ".cache", "voice_agent", "models"),
     "folder holding the model files"),
    ("whisper_model", "ggml-tiny.en.bin", "Whisper ggml model in models_dir"),
    ("vad_model", "ggml-silero-v6.2.3.bin", "Silero VAD ggml model in models_dir"),
    ("llm_model", "SmolLM2-135M-Instruct.Q4_1.gguf", "GGUF chat model in models_dir"),
    ("tts_engine", "piper", "piper | espeak"),
    ("voice", "en_US-joe-medium.onnx", "Piper voice in models_dir"),
    ("onnxruntime", "libonnxruntime.so.1.32.0", "onnxruntime library in models_dir"),
    ("turn_model", "smart-turn-v3.2-cpu.onnx", "audio end-of-turn model (Smart Turn v3 ONNX) in models_dir"),
    ("mic", "false", "start audio_node: capture the microphone on audio, play audio_out on the speaker, with echo cancellation"),
    ("audio_backend", "device", "audio_node backend: device (sound card) | sim (simulated room)"),
    ("capture_device", "", "audio_node capture device: name (part of one), #index, or empty for the default (audio_node --list-devices)"),
    ("playback_device", "", "audio_node playback device, as capture_device"),
    ("playback", "false", "tts_node plays speech itself (leave false with mic:=true: audio_node plays it)"),
    # another argument's value as default: resolved when the launch runs
    ("barge_in", LaunchConfiguration("mic"), "user speech interrupts the robot (default: on with mic:=true, whose echo cancellation keeps the robot's own voice from doing it)"),
    ("use_sim_time", "false", "use /clock (rosbag replay)"),
    ("managed", "false", "the nodes start unconfigured and wait for a lifecycle manager (ros2 lifecycle set, Nav2's lifecycle_manager); false = configured and active at start"),
    ("places_file", "", "YAML of named places; set to send spoken goals to Nav2 (NavigateToPose action). Example: share/voice_agent/config/places/example.yaml"),
    ("stt_engine", "local", "local (Whisper in stt_node) | openai (an OpenAI-compatible transcription server)"),
    ("stt_server_url", "http://127.0.0.1:8000/v1", "stt_engine openai: the server's base URL (https:// for TLS)"),
    ("stt_server_model", "whisper-1", "stt_engine openai: the model name the server serves"),
    ("stt_api_key_env", "", "stt_engine openai: name of the environment variable holding the API key (empty = none)"),
    ("stt_fallback", "local", "stt_engine openai: local (whisper_model transcribes while the server cannot) | none"),
    ("llm_engine", "local", "local (the GGUF model in llm_node) | openai (an OpenAI-compatible server: vLLM, SGLang, llama.cpp's server, Ollama)"),
    ("llm_server_url", "http://127.0.0.1:8000/v1", "llm_engine openai: the server's base URL (https:// for TLS)"),
    ("llm_server_model", "llama-3.2-3b-instruct", "llm_engine openai: the model name the server serves"),
    ("llm_api_key_env", "", "llm_engine openai: name of the environment variable holding the API key (empty = none)"),
    ("llm_fallback", "local", "llm_engine openai: local (llm_model answers while the server cannot) | none"),
    ("battery_topic", "", "sensor_msgs/BatteryState topic the robot answers battery questions from"),
    ("pose_topic", "", "geometry_msgs/PoseWithCovarianceStamped topic (e.g. amcl_pose) the robot answers position questions from"),
]


def generate_launch_description():
    arg = LaunchConfiguration
    # Only launch API that Humble, Jazzy and Kilted all accept: a substitution
    # list is flat (str or Substitution items, concatenated). A nested list
    # inside PathJoinSubstitution is accepted by newer launch releases only
    # (Jazzy's 3.4 raises "Failed to normalize given item of type list").
    config_dir = os.path.join(get_package_share_directory("voice_agent"), "config", "")
    profile = ParameterFile([config_dir, arg("profile"), ".yaml"])
    models = arg("models_dir")

    def model(name):
        return PathJoinSubstitution([models, arg(name)])

    common = dict(package="voice_agent", namespace=arg("namespace"), output="screen")
    return LaunchDescription([
        *[DeclareLaunchArgument(n, default_value=d, description=h) for n, d, h in ARGS],
        Node(executable="stt_node", name="stt_node", **common, parameters=[profile, {
            "model_path": model("whisper_model"),
            "vad.model_path": model("vad_model"),
            "turn.audio_model_path": model("turn_model"),
            "onnxruntime_path": model("onnxruntime"),
            "barge_in": arg("barge_in"),
            "engine": arg("stt_engine"),
            "server.base_url": arg("stt_server_url"),
            "server.model": ParameterValue(arg("stt_server_model"), value_type=str),
            "server.api_key_env": ParameterValue(arg("stt_api_key_env"), value_type=str),
            "fallback": arg("stt_fallback"),
            "managed": arg("managed"),
            "use_sim_time": arg("use_sim_time"),
        }]),
        Node(executable="llm_node", name="llm_node", **common, parameters=[profile, {
            "model_path": model("llm_model"),
            # strings even when empty (the default: intents and robot state off)
            "places_file": ParameterValue(arg("places_file"), value_type=str),
            "battery_topic": ParameterValue(arg("battery_topic"), value_type=str),
            "pose_topic": ParameterValue(arg("pose_topic"), value_type=str),
            "engine": arg("llm_engine"),
            "server.base_url": arg("llm_server_url"),
            "server.model": ParameterValue(arg("llm_server_model"), value_type=str),
            "server.api_key_env": ParameterValue(arg("llm_api_key_env"), value_type=str),
            "fallback": arg("llm_fallback"),
            "managed": arg("managed"),
            "use_sim_time": arg("use_sim_time"),
        }]),
        Node(executable="tts_node", name="tts_node", **common, parameters=[profile, {
            "engine": arg("tts_engine"),
            "voice_path": model("voice"),
            "onnxruntime_path": model("onnxruntime"),
            "playback": arg("playback"),
            "managed": arg("managed"),
            "use_sim_time": arg("use_sim_time"),
        }]),
        Node(executable="audio_node", name="audio_node", **common, condition=IfCondition(arg("mic")),
             parameters=[profile, {
                 "backend": arg("audio_backend"),
                 "capture_device": ParameterValue(arg("capture_device"), value_type=str),
                 "playback_device": ParameterValue(arg("playback_device"), value_type=str),
                 "managed": arg("managed"),
                 "use_sim_time": arg("use_sim_time"),
             }]),
    ])
