//! Finding adapters, describing them, and choosing one.
//!
//! `auto` wants a hardware GPU: a software rasterizer (llvmpipe/lavapipe)
//! runs the same kernels but emulates the GPU on the CPU cores the codecs
//! need, so `auto` falls back to the CPU backend instead. `--backend gpu`
//! takes any adapter, software included (that is how CI tests the kernels).

use serde::Serialize;

use crate::error::{Error, Result};

/// What `framepipe info` prints about one adapter.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    /// Adapter name, e.g. "NVIDIA H100 PCIe" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API (Vulkan, Metal, Dx12).
    pub backend: String,
    /// Discrete, integrated, virtual, CPU (software) or other.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage-buffer binding, in bytes: bigger frames are banded.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Whether GPU timestamps can time the kernels.
    pub timestamps: bool,
    /// True for software rasterizers.
    pub software: bool,
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            timestamps: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            software: info.device_type == wgpu::DeviceType::Cpu,
        }
    }

    /// Lower is better: discrete, integrated, virtual, other, software.
    fn rank(&self, adapter: &wgpu::Adapter) -> u8 {
        match adapter.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        }
    }
}

/// A new wgpu instance on the primary APIs (Vulkan, Metal, DX12), or
/// those named by `WGPU_BACKEND`.
pub fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    wgpu::Instance::new(desc)
}

/// Every adapter the instance can see, best first.
pub fn list_adapters(instance: &wgpu::Instance) -> Vec<(wgpu::Adapter, AdapterSummary)> {
    let mut all: Vec<_> = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .map(|a| {
            let s = AdapterSummary::of(&a);
            (a, s)
        })
        .collect();
    all.sort_by_key(|(a, s)| s.rank(a));
    all
}

/// The adapter a backend request gets, and a sentence saying why.
///
/// `name` keeps adapters whose name contains it (case-insensitive), or,
/// one or two digits, the adapter at that place in [`list_adapters`]'
/// order (`framepipe info` numbers them so: `0`); longer numbers are part
/// of a name (`4090`).
/// `hardware_only` is `auto`'s rule: skip software rasterizers.
///
/// # Errors
/// [`Error::Gpu`] saying what was found and why none qualified.
pub fn choose(
    adapters: Vec<(wgpu::Adapter, AdapterSummary)>,
    name: Option<&str>,
    hardware_only: bool,
) -> Result<(wgpu::Adapter, AdapterSummary, String)> {
    if adapters.is_empty() {
        return Err(Error::Gpu("no GPU adapter found (no Vulkan, Metal or DX12 driver)".into()));
    }
    let found: Vec<String> = adapters.iter().map(|(_, s)| format!("{} ({})", s.name, s.device_type)).collect();
    let needle = name.map(str::to_lowercase);
    // One or two digits are a number in the list, never part of a name
    // (`--adapter 2` on a machine of two must not pick `llvmpipe (LLVM
    // 17.0.6)` for its digit); longer ones are a name (`4090`).
    let index = name.filter(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
    let index = index.map(|n| n.parse::<usize>().unwrap_or(usize::MAX));
    let matching: Vec<_> = adapters
        .into_iter()
        .enumerate()
        .filter(|(i, (_, s))| match index {
            Some(index) => *i == index,
            None => needle.as_ref().is_none_or(|n| s.name.to_lowercase().contains(n)),
        })
        .map(|(_, a)| a)
        .collect();
    if matching.is_empty() {
        // A usage error (exit 2): the name asked for, not the machine, is wrong.
        let numbered: Vec<String> = found.iter().enumerate().map(|(i, f)| format!("[{i}] {f}")).collect();
        let expected = match index {
            // A number past the list: said as such, with the numbers there are.
            Some(_) if !found.is_empty() => format!("an adapter's number, 0 to {}", found.len() - 1),
            _ => "part of an adapter's name, or its number".to_string(),
        };
        return Err(Error::invalid(
            "adapter",
            format!("{:?}", name.unwrap_or("")),
            format!("{expected}; found: {}", numbered.join(", ")),
        ));
    }
    for (adapter, summary) in matching {
        if hardware_only && summary.software {
            continue;
        }
        let why = if summary.software {
            let why = match index {
                Some(_) => "it was asked for by number",
                None if name.is_some() => "it was named",
                None => "a GPU was asked for",
            };
            format!("{} is a software rasterizer, taken because {why}", summary.name)
        } else {
            format!("{} is the best hardware adapter ({})", summary.name, summary.device_type)
        };
        return Ok((adapter, summary, why));
    }
    Err(Error::Gpu(format!("only software adapters found ({})", found.join(", "))))
}
