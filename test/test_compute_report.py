"""Each engine node says where it actually runs: one `compute:` line at start
and a `compute` value in /diagnostics (build, devices, layers on the GPU,
flash attention), and one warning when GPU use is asked of a build or machine
that cannot give it. These run on the CPU build; the CUDA build is compiled
by scripts/cuda_check.sh."""
import pytest
from diagnostic_msgs.msg import DiagnosticArray

from va_harness import LLM_MODEL, WHISPER_MODEL


def compute_values(diags, node):
    return [kv.value for d in diags for s in d.status if s.name.endswith(node) for kv in s.values
            if kv.key == "compute"]


CASES = [
    # SmolLM2-135M: 30 layers + the output layer
    ("llm_node", {"model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 1024, "parallel": 1, "use_mlock": False,
                  "n_gpu_layers": 99, "flash_attn": True},
     "CPU build; devices: CPU; 0/31 layers on GPU; flash attention on",
     "n_gpu_layers is 99 but this llm_node was built without CUDA"),
    ("stt_node", {"model_path": WHISPER_MODEL, "use_gpu": True, "n_threads": 1},
     "CPU build; devices: CPU; Whisper on CPU; flash attention off",
     "use_gpu is true but this stt_node was built without CUDA"),
]


@pytest.mark.parametrize("exe,params,want,warning", CASES, ids=[c[0] for c in CASES])
def test_node_reports_its_devices_and_warns_once(ros, exe, params, want, warning):
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    p = ros.start(exe, params=params)
    ros.wait_for(lambda: compute_values(diags, exe), 30, f"{exe} diagnostics")
    assert compute_values(diags, exe)[-1] == want
    log = p.log()
    assert f"compute: {want}" in log
    assert log.count(warning) == 1, log


def test_no_gpu_asked_no_warning(ros):
    p = ros.start("llm_node", params={"model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 1024, "parallel": 1,
                                      "use_mlock": False, "n_gpu_layers": 0})
    ros.wait_for(lambda: "ready" in p.log(), 30, "llm_node ready")
    assert "WARN" not in p.log(), p.log()
