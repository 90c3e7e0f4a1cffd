//! Backend selection. Backends are cargo features: `flex` (CPU, default), `vulkan` (GPUs through
//! Vulkan) and `cuda` (NVIDIA; its build downloads LLVM, so it needs internet to build).

use anyhow::{bail, Result};
use burn::tensor::Device;

/// Device names this binary was built with.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "vulkan") {
        v.push("vulkan");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// Checks that `name` is a device this binary supports.
pub fn check_device_name(name: &str) -> Result<()> {
    if available().contains(&name) {
        Ok(())
    } else {
        bail!(
            "device {name:?} is not available in this build; available: {} (build with --features vulkan or cuda for GPUs)",
            available().join(", ")
        )
    }
}

/// The (non-autodiff) device called `name`.
pub fn device(name: &str) -> Result<Device> {
    check_device_name(name)?;
    Ok(match name {
        // Data-parallel ranks on one machine take one GPU each (GPU index = local rank).
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(match crate::distributed::local_rank() {
            Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
            None => Default::default(),
        }),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(crate::distributed::local_rank().unwrap_or(0)),
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        other => bail!("device {other:?} is not available in this build"),
    })
}

/// Sets the number of CPU threads used by the flex backend and rayon (0 = all cores).
/// Only the first call in a process takes effect.
pub fn set_threads(threads: usize) {
    if threads > 0 {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    }
}
