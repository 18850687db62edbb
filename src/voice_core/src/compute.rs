//! What an engine actually runs on, in words for the start-up log and
//! /diagnostics: the ggml backend devices found, how many layers went to a
//! GPU, flash attention. The node crates list the devices through their own
//! ggml (each links one engine); the wording is shared here.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    /// Integrated GPU (e.g. a Jetson's, sharing memory with the CPU).
    IntegratedGpu,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// ggml device name, e.g. "CUDA0", "CPU".
    pub name: String,
    /// e.g. "NVIDIA GeForce RTX 4090", "Orin".
    pub description: String,
    pub kind: DeviceKind,
    pub memory_total: usize,
    pub memory_free: usize,
}

impl Device {
    pub fn is_gpu(&self) -> bool {
        matches!(self.kind, DeviceKind::Gpu | DeviceKind::IntegratedGpu)
    }

    fn describe(&self) -> String {
        if self.is_gpu() && self.memory_total > 0 {
            format!(
                "{} {} ({:.1} of {:.1} GiB free)",
                self.name,
                self.description,
                gib(self.memory_free),
                gib(self.memory_total)
            )
        } else {
            self.name.clone()
        }
    }
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// "CUDA0 NVIDIA ... (6.1 of 7.4 GiB free), CPU", or "none" for an empty list.
pub fn describe_devices(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "none".into();
    }
    devices
        .iter()
        .map(Device::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an engine cannot run on a GPU here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoGpu {
    /// The binary was built without the `cuda` feature.
    CpuBuild,
    /// A CUDA build, but ggml found no GPU device.
    NoDevice,
}

impl NoGpu {
    /// The reason in words; `node` names the executable ("llm_node").
    pub fn explain(self, node: &str) -> String {
        match self {
            NoGpu::CpuBuild => format!("this {node} was built without CUDA"),
            NoGpu::NoDevice => "no GPU device was found".into(),
        }
    }
}

/// `None` when this build has GPU support and ggml found a GPU device.
pub fn no_gpu(gpu_build: bool, devices: &[Device]) -> Option<NoGpu> {
    if !gpu_build {
        Some(NoGpu::CpuBuild)
    } else if !devices.iter().any(Device::is_gpu) {
        Some(NoGpu::NoDevice)
    } else {
        None
    }
}

/// Layers llama.cpp puts on the GPU: the requested count, capped at the
/// model's layers plus its output layer; none without a GPU device or
/// without GPU support in the build.
pub fn layers_offloaded(requested: u32, n_layer: u32, gpu_build: bool, devices: &[Device]) -> u32 {
    match no_gpu(gpu_build, devices) {
        None => requested.min(n_layer + 1),
        Some(_) => 0,
    }
}

/// The one line a node logs at start about where its engine runs;
/// `placement` says what went where ("29/29 layers on GPU", "on CPU").
pub fn summary(gpu_build: bool, devices: &[Device], placement: &str, flash_attn: bool) -> String {
    let build = if gpu_build { "CUDA build" } else { "CPU build" };
    format!(
        "{build}; devices: {}; {placement}; flash attention {}",
        describe_devices(devices),
        if flash_attn { "on" } else { "off" }
    )
}

/// Whether an engine asked to use the GPU gets one.
pub fn gpu_used(requested: bool, gpu_build: bool, devices: &[Device]) -> bool {
    requested && no_gpu(gpu_build, devices).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Device {
        Device {
            name: "CPU".into(),
            description: "x86".into(),
            kind: DeviceKind::Cpu,
            memory_total: 0,
            memory_free: 0,
        }
    }

    fn orin() -> Device {
        Device {
            name: "CUDA0".into(),
            description: "Orin".into(),
            kind: DeviceKind::IntegratedGpu,
            memory_total: 16 << 30,
            memory_free: 12 << 30,
        }
    }

    #[test]
    fn offload_needs_a_gpu_build_and_a_gpu() {
        assert_eq!(layers_offloaded(99, 28, true, &[orin(), cpu()]), 29);
        assert_eq!(layers_offloaded(10, 28, true, &[orin(), cpu()]), 10);
        assert_eq!(layers_offloaded(99, 28, false, &[cpu()]), 0);
        assert_eq!(layers_offloaded(99, 28, true, &[cpu()]), 0);
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summary(false, &[cpu()], "0/31 layers on GPU", true),
            "CPU build; devices: CPU; 0/31 layers on GPU; flash attention on"
        );
        assert_eq!(
            summary(true, &[orin(), cpu()], "on GPU", false),
            "CUDA build; devices: CUDA0 Orin (12.0 of 16.0 GiB free), CPU; on GPU; flash attention off"
        );
        assert!(gpu_used(true, true, &[orin(), cpu()]));
        assert!(!gpu_used(true, false, &[orin(), cpu()]));
        assert!(!gpu_used(true, true, &[cpu()]));
        assert!(!gpu_used(false, true, &[orin()]));
        assert_eq!(no_gpu(false, &[orin()]), Some(NoGpu::CpuBuild));
        assert_eq!(no_gpu(true, &[cpu()]), Some(NoGpu::NoDevice));
        assert_eq!(no_gpu(true, &[orin(), cpu()]), None);
        assert_eq!(
            NoGpu::CpuBuild.explain("stt_node"),
            "this stt_node was built without CUDA"
        );
    }
}
