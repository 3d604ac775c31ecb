//! The WGSL sources, their uniform block, and the compiled pipelines.
//!
//! Every shader lives under `shaders/`, one file per kernel family, with
//! the shared `Params` block in `common.wgsl` prepended to each.

use bytemuck::{Pod, Zeroable};

/// Shared declarations, prepended to every kernel file.
pub const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");
/// Packed ⇄ f32 conversion kernels: `load8`, `load16`, `store8`, `store16`.
pub const PACK_WGSL: &str = include_str!("../../shaders/pack.wgsl");
/// Separable blur kernels: `blur_h`, `blur_v`.
pub const BLUR_WGSL: &str = include_str!("../../shaders/blur.wgsl");

/// Every shader as the device compiles it: (name, full source).
pub fn shader_sources() -> [(&'static str, String); 2] {
    [("pack", format!("{COMMON_WGSL}\n{PACK_WGSL}")), ("blur", format!("{COMMON_WGSL}\n{BLUR_WGSL}"))]
}

/// Workgroup shape of every kernel (keep in sync with `@workgroup_size`).
pub const WORKGROUP: (u32, u32) = (64, 4);

/// Uniform block of every dispatch.
///
/// Keep in sync with `struct Params` in shaders/common.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Params {
    /// Pixels per row.
    pub width: u32,
    /// Rows in the band's scratch.
    pub rows: u32,
    /// First scratch row that `store` writes.
    pub first_row: u32,
    /// Rows that `store` writes.
    pub store_rows: u32,
    /// Blur radius.
    pub radius: u32,
    /// Padding to 16 bytes.
    pub pad: [u32; 3],
    /// Affine rows `[m0, m1, m2, offset]`.
    pub affine: [[f32; 4]; 3],
}

/// The compute pipelines, compiled once per device.
pub struct Kernels {
    pub(crate) load8: wgpu::ComputePipeline,
    pub(crate) load16: wgpu::ComputePipeline,
    pub(crate) store8: wgpu::ComputePipeline,
    pub(crate) store16: wgpu::ComputePipeline,
    pub(crate) blur_h: wgpu::ComputePipeline,
    pub(crate) blur_v: wgpu::ComputePipeline,
}

impl Kernels {
    /// Compiles every kernel for `device`.
    pub fn new(device: &wgpu::Device) -> Self {
        let [(_, pack), (_, blur)] = shader_sources();
        let pack = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("pack.wgsl"),
            source: wgpu::ShaderSource::Wgsl(pack.into()),
        });
        let blur = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("blur.wgsl"),
            source: wgpu::ShaderSource::Wgsl(blur.into()),
        });
        let make = |module: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Kernels {
            load8: make(&pack, "load8"),
            load16: make(&pack, "load16"),
            store8: make(&pack, "store8"),
            store16: make(&pack, "store16"),
            blur_h: make(&blur, "blur_h"),
            blur_v: make(&blur, "blur_v"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shader parses and validates with naga, without a device.
    #[test]
    fn shaders_validate() {
        for (name, source) in shader_sources() {
            let module = wgpu::naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
            wgpu::naga::valid::Validator::new(Default::default(), wgpu::naga::valid::Capabilities::default())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        assert_eq!(std::mem::size_of::<Params>(), 80);
    }
}
