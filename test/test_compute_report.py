"""Each engine node says where it actually runs: one `compute:` line at start
and a `compute` value in /diagnostics (build, devices, layers on the GPU,
flash attention), and one warning when GPU use is asked of a build or machine
that cannot give it. These run on the CPU build; the CUDA build is compiled
by scripts/cuda_check.sh."""
from diagnostic_msgs.msg import DiagnosticArray

from conftest import LLM_MODEL, WHISPER_MODEL


def compute_values(diags, node):
    return [kv.value for d in diags for s in d.status if s.name.endswith(node) for kv in s.values
            if kv.key == "compute"]


def test_llm_node_reports_its_devices_and_offload(ros):
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    p = ros.start("llm_node", params={"model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 1024, "parallel": 1,
                                      "use_mlock": False, "n_gpu_layers": 99, "flash_attn": True})
    ros.wait_for(lambda: compute_values(diags, "llm_node"), 30, "llm_node diagnostics")
    # SmolLM2-135M: 30 layers + output layer
    want = "CPU build; devices: CPU; 0/31 layers on GPU; flash attention on"
    assert compute_values(diags, "llm_node")[-1] == want
    log = p.log()
    assert f"compute: {want}" in log
    assert log.count("n_gpu_layers is 99 but this llm_node was built without CUDA") == 1, log


def test_stt_node_reports_its_devices(ros):
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    p = ros.start("stt_node", params={"model_path": WHISPER_MODEL, "use_gpu": True, "n_threads": 1})
    ros.wait_for(lambda: compute_values(diags, "stt_node"), 30, "stt_node diagnostics")
    want = "CPU build; devices: CPU; Whisper on CPU; flash attention off"
    assert compute_values(diags, "stt_node")[-1] == want
    log = p.log()
    assert f"compute: {want}" in log
    assert log.count("use_gpu is true but this stt_node was built without CUDA") == 1, log


def test_no_gpu_asked_no_warning(ros):
    p = ros.start("llm_node", params={"model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 1024, "parallel": 1,
                                      "use_mlock": False, "n_gpu_layers": 0})
    ros.wait_for(lambda: "ready" in p.log(), 30, "llm_node ready")
    assert "WARN" not in p.log(), p.log()
