"""Every parameter named in launch files and config profiles is declared by
its node with the right type; each profile starts the real nodes with no
unknown-parameter warning and the values arrive.

What a node does with a parameter it does not declare: it starts, and logs
one warning per unknown name (a typo in a launch file is visible, a newer
profile on an older build still runs).
"""
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.srv import GetParameters

import launch_contract
from va_harness import BIN, LLM_MODEL, ONNXRUNTIME, PIPER_VOICE, ROOT, SMART_TURN, VAD_MODEL, WHISPER_MODEL

NODES = ["stt_node", "llm_node", "tts_node", "audio_node"]
# what starts without mic:=true
PIPELINE = NODES[:3]
PROFILES = sorted((ROOT / "config").glob("*.yaml"))
YAML_TYPES = {bool: "bool", int: "integer", float: "double", str: "string"}
RESERVED = {"use_sim_time"}


def declared(node):
    out = subprocess.run([str(BIN / node), "--describe-params"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


DECLARED = {}


def decl(node):
    if node not in DECLARED:
        DECLARED[node] = declared(node)
    return DECLARED[node]


def flatten(d, prefix=""):
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from flatten(v, name + ".")
        else:
            yield name, v


def profile_params(path):
    data = yaml.safe_load(path.read_text())
    for key, section in data.items():
        node = key.split("/")[-1]
        if node == "**":
            continue
        yield node, dict(flatten(section["ros__parameters"]))


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_profile_parameters_are_declared_with_their_types(profile):
    seen = set()
    for node, params in profile_params(profile):
        assert node in NODES, f"{profile.name}: unknown node {node}"
        seen.add(node)
        d = decl(node)
        for name, value in params.items():
            assert name in d, f"{profile.name}: {node} does not declare {name}"
            assert YAML_TYPES[type(value)] == d[name]["type"], \
                f"{profile.name}: {node}.{name} = {value!r} is {YAML_TYPES[type(value)]}, declared {d[name]['type']}"
    assert seen == set(NODES)


def launch_xml_params():
    root = ET.parse(ROOT / "launch" / "voice_agent.launch.xml").getroot()
    args = {a.get("name"): a.get("default") for a in root.iter("arg")}
    for n in root.iter("node"):
        for p in n.iter("param"):
            if p.get("name"):
                yield n.get("exec"), p.get("name"), p.get("value"), args


def test_launch_xml_parameters_are_declared():
    rows = list(launch_xml_params())
    assert {r[0] for r in rows} == set(NODES)
    for node, name, value, args in rows:
        assert name in decl(node) or name in RESERVED, f"launch xml: {node} does not declare {name}"
        if value.startswith("$(var ") and value.endswith(")") and value.count("$(") == 1:
            default = args[value[6:-1]]
            while default and default.startswith("$(var ") and default.endswith(")"):
                default = args[default[6:-1]]  # an argument defaulting to another
            if name in decl(node) and default is not None:
                # launch_ros passes an empty value as an empty string
                t = "string" if default == "" else YAML_TYPES[type(yaml.safe_load(default))]
                assert t == decl(node)[name]["type"], f"launch xml: {node}.{name} default {default!r} is {t}"


def launch_py(args):
    """What launch/voice_agent.launch.py starts for `args`, from executing
    generate_launch_description() under the launch API all supported ROS 2
    releases accept (test/launch_contract.py)."""
    return launch_contract.describe(launch_contract.load(ROOT / "launch" / "voice_agent.launch.py"), args)


@pytest.mark.parametrize("mic", ["false", "true"])
@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_launch_py_builds_and_resolves(profile, mic):
    declared_args, nodes = launch_py({"profile": profile.stem, "namespace": "robot1", "mic": mic})
    assert [n["executable"] for n in nodes] == (NODES if mic == "true" else PIPELINE)
    for n in nodes:
        assert n["package"] == "voice_agent" and n["name"] == n["executable"]
        assert n["namespace"] == "robot1"
        # the profile file resolves to the installed copy of config/PROFILE.yaml
        assert len(n["files"]) == 1, n["files"]
        installed = Path(n["files"][0])
        assert installed.name == profile.name and installed.parent.name == "config", installed
        assert installed.is_file(), installed
        assert installed.read_text() == profile.read_text()
        d = decl(n["executable"])
        for name, value in n["params"].items():
            if name in RESERVED:
                assert isinstance(value, bool), (name, value)
                continue
            assert name in d, f"launch py: {n['executable']} does not declare {name}"
            assert YAML_TYPES[type(value)] == d[name]["type"], (n["executable"], name, value)
    models = declared_args["models_dir"]
    stt = nodes[0]["params"]
    assert stt["model_path"] == os.path.join(models, "ggml-tiny.en.bin")
    # barge-in follows mic (echo cancelled) unless set
    assert stt["barge_in"] is (mic == "true")
    if mic == "true":
        audio = nodes[3]["params"]
        assert audio["backend"] == "device" and audio["capture_device"] == "" and audio["playback_device"] == ""
        assert nodes[2]["params"]["playback"] is False  # audio_node plays the robot's voice
    llm = nodes[1]["params"]
    # empty launch arguments stay strings (intents and robot state off)
    assert llm["places_file"] == "" and llm["battery_topic"] == ""
    assert llm["engine"] == "local" and llm["server.api_key_env"] == ""


def test_launch_py_arguments_reach_the_nodes():
    _, nodes = launch_py({"barge_in": "true", "places_file": "/tmp/p.yaml", "models_dir": "/m",
                          "llm_model": "x.gguf", "tts_engine": "espeak", "use_sim_time": "true",
                          "managed": "true", "llm_engine": "openai", "llm_server_url": "https://gpu:8443/v1",
                          "llm_api_key_env": "SITE_KEY", "llm_fallback": "none", "stt_engine": "openai",
                          "stt_server_url": "https://gpu:8444/v1", "stt_fallback": "none"})
    by = {n["executable"]: n["params"] for n in nodes}
    assert (by["llm_node"]["engine"], by["llm_node"]["server.base_url"], by["llm_node"]["server.api_key_env"],
            by["llm_node"]["fallback"]) == ("openai", "https://gpu:8443/v1", "SITE_KEY", "none")
    assert (by["stt_node"]["engine"], by["stt_node"]["server.base_url"], by["stt_node"]["fallback"],
            by["stt_node"]["server.api_key_env"]) == ("openai", "https://gpu:8444/v1", "none", "")
    assert all(p["managed"] is True for p in by.values())
    assert by["stt_node"]["barge_in"] is True
    assert by["llm_node"]["places_file"] == "/tmp/p.yaml"
    assert by["llm_node"]["model_path"] == "/m/x.gguf"
    assert by["tts_node"]["engine"] == "espeak"
    assert all(p["use_sim_time"] is True for p in by.values())
    _, nodes = launch_py({"mic": "true", "barge_in": "false", "audio_backend": "sim", "capture_device": "#2"})
    by = {n["executable"]: n["params"] for n in nodes}
    assert by["audio_node"]["managed"] is False
    assert by["stt_node"]["barge_in"] is False
    # "#2" stays a string (YAML would read a comment)
    assert by["audio_node"]["backend"] == "sim" and by["audio_node"]["capture_device"] == "#2"
    with pytest.raises(ValueError, match="IfCondition"):
        launch_py({"mic": "yes please"})


def test_launch_py_refuses_what_older_launch_refuses():
    """The contract the test runs under is the strict one: a nested list in a
    substitution list fails as it does under Jazzy's launch."""
    with pytest.raises(TypeError, match="Failed to normalize given item of type"):
        launch_contract.PathJoinSubstitution(["share", "config", [launch_contract.LaunchConfiguration("p"), ".yaml"]])


def test_launch_py_matches_xml():
    declared_args, nodes = launch_py({"mic": "true"})
    py = sorted((n["executable"], p) for n in nodes for p in n["params"])
    xml = sorted((n, p) for n, p, _, _ in launch_xml_params())
    assert py == xml
    root = ET.parse(ROOT / "launch" / "voice_agent.launch.xml").getroot()
    xml_args = {a.get("name"): a.get("default").replace("$(env HOME)", os.path.expanduser("~"))
                for a in root.iter("arg")}
    assert declared_args == xml_args


def test_profile_files_referenced_by_launch_exist():
    root = ET.parse(ROOT / "launch" / "voice_agent.launch.xml").getroot()
    default = next(a.get("default") for a in root.iter("arg") if a.get("name") == "profile")
    assert (ROOT / "config" / f"{default}.yaml").exists()


MODEL_PARAMS = {
    "stt_node": {"model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "turn.audio_model_path": SMART_TURN,
                 "onnxruntime_path": ONNXRUNTIME},
    "llm_node": {"model_path": LLM_MODEL},
    "tts_node": {"voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME},
    "audio_node": {"backend": "sim"},  # no sound card here
}


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_profile_starts_real_nodes_and_values_arrive(ros, profile):
    wanted = dict(profile_params(profile))
    procs = {}
    for node in NODES:
        procs[node] = ros.start(node, params=MODEL_PARAMS[node], extra_args=["--params-file", str(profile)],
                                name=f"{node}-{profile.stem}")
    for node in NODES:
        client = ros.node.create_client(GetParameters, f"/{node}/get_parameters")
        ros.wait_for(lambda: client.service_is_ready(), 60, f"{node} parameter service")
        names = sorted(wanted[node])
        fut = client.call_async(GetParameters.Request(names=names))
        ros.wait_for(fut.done, 10, f"{node} parameters")
        for name, v in zip(names, fut.result().values):
            got = {1: v.bool_value, 2: v.integer_value, 3: v.double_value, 4: v.string_value}.get(v.type)
            want = wanted[node][name]
            if isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-6), (node, name)
            else:
                assert got == want, (node, name, got, want)
        assert "unknown parameter" not in procs[node].log(), procs[node].log()


def test_unknown_parameter_is_a_warning(ros):
    p = ros.start("tts_node", params={"engine": "espeak", "speling_mistake": 3})
    ros.wait_for(lambda: "ready" in p.log(), 20, "tts_node ready")
    assert 'unknown parameter "speling_mistake"' in p.log()
