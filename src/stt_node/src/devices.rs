//! The ggml devices whisper.cpp can run on (its own ggml, linked into this
//! binary only), for the start-up log and /diagnostics.

use std::ffi::CStr;
use std::os::raw::c_char;

use voice_core::compute::{Device, DeviceKind};
use whisper_rs::whisper_rs_sys as sys;

fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: ggml returns NUL-terminated strings owned by the device
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Every device ggml registered in this build (CPU always; CUDA GPUs in a CUDA build).
pub fn list() -> Vec<Device> {
    // SAFETY: plain queries of ggml's static device registry; `props` is
    // fully written by ggml_backend_dev_get_props before it is read
    let n = unsafe { sys::ggml_backend_dev_count() };
    (0..n)
        .filter_map(|i| unsafe {
            let dev = sys::ggml_backend_dev_get(i);
            if dev.is_null() {
                return None;
            }
            let mut props: sys::ggml_backend_dev_props = std::mem::zeroed();
            sys::ggml_backend_dev_get_props(dev, &mut props);
            Some(Device {
                name: text(props.name),
                description: text(props.description),
                kind: match props.type_ {
                    sys::ggml_backend_dev_type_GGML_BACKEND_DEVICE_TYPE_CPU => DeviceKind::Cpu,
                    sys::ggml_backend_dev_type_GGML_BACKEND_DEVICE_TYPE_GPU => DeviceKind::Gpu,
                    sys::ggml_backend_dev_type_GGML_BACKEND_DEVICE_TYPE_IGPU => {
                        DeviceKind::IntegratedGpu
                    }
                    _ => DeviceKind::Other,
                },
                memory_total: props.memory_total,
                memory_free: props.memory_free,
            })
        })
        .collect()
}
