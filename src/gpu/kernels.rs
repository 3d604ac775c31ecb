//! The WGSL sources, their uniform block, and the compiled pipelines.
//!
//! Every shader lives under `shaders/`, one file per kernel family, with
//! the shared `Params` block in `common.wgsl` prepended to each.

use bytemuck::{Pod, Zeroable};

/// Shared declarations, prepended to every kernel file.
pub const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");
/// The fused color kernel for plans without a blur: `color`.
pub const COLOR_WGSL: &str = include_str!("../../shaders/color.wgsl");
/// Separable blur kernels with fused color stages: `blur_h_packed`,
/// `blur_h`, `blur_v`, `blur_v_packed`.
pub const BLUR_WGSL: &str = include_str!("../../shaders/blur.wgsl");

/// Area-average downscale for previews: `downscale`.
pub const DOWNSCALE_WGSL: &str = include_str!("../../shaders/downscale.wgsl");

/// Every shader as the device compiles it: (name, full source).
pub fn shader_sources() -> [(&'static str, String); 3] {
    [
        ("color", format!("{COMMON_WGSL}\n{COLOR_WGSL}")),
        ("blur", format!("{COMMON_WGSL}\n{BLUR_WGSL}")),
        ("downscale", format!("{COMMON_WGSL}\n{DOWNSCALE_WGSL}")),
    ]
}

/// Workgroup shape of every kernel (keep in sync with `@workgroup_size`).
pub const WORKGROUP: (u32, u32) = (64, 4);

/// Outputs each blur invocation computes: neighbouring pixels of a row in
/// the horizontal pass, of a column in the vertical one (`OUTPUTS` in
/// blur.wgsl).
pub const BLUR_OUTPUTS: u32 = 4;

pub use crate::ops::AT_LOAD_GAIN;

/// The parameters of every dispatch (a read-only storage buffer: see
/// shaders/common.wgsl). Keep in sync with `struct Params` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Params {
    /// Pixels per row.
    pub width: u32,
    /// Rows of the band, halo included.
    pub rows: u32,
    /// First band row that the final kernel writes out (for `downscale`:
    /// the first row of `small` this band's blocks fill).
    pub first_row: u32,
    /// Rows the final kernel writes out.
    pub store_rows: u32,
    /// Blur radius (for `downscale`: the block size, the scale factor).
    pub radius: u32,
    /// 1 for RGBA16 frames, 0 for RGBA8.
    pub sixteen: u32,
    /// 1 to apply the affine stage to each loaded pixel rather than to the
    /// blurred sum (see [`AT_LOAD_GAIN`]).
    pub affine_at_load: u32,
    /// Padding to 16 bytes.
    pub pad: u32,
    /// Affine rows `[m0, m1, m2, offset]`.
    pub affine: [[f32; 4]; 3],
}

/// The compute pipelines, compiled once per device.
pub struct Kernels {
    pub(crate) color: wgpu::ComputePipeline,
    pub(crate) blur_h_packed: wgpu::ComputePipeline,
    pub(crate) blur_h: wgpu::ComputePipeline,
    pub(crate) blur_v: wgpu::ComputePipeline,
    pub(crate) blur_v_packed: wgpu::ComputePipeline,
    pub(crate) downscale: wgpu::ComputePipeline,
}

impl Kernels {
    /// Compiles every kernel for `device`.
    pub fn new(device: &wgpu::Device) -> Self {
        let [(_, color), (_, blur), (_, downscale)] = shader_sources();
        let downscale = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("downscale.wgsl"),
            source: wgpu::ShaderSource::Wgsl(downscale.into()),
        });
        let color = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("color.wgsl"),
            source: wgpu::ShaderSource::Wgsl(color.into()),
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
            color: make(&color, "color"),
            blur_h_packed: make(&blur, "blur_h_packed"),
            blur_h: make(&blur, "blur_h"),
            blur_v: make(&blur, "blur_v"),
            blur_v_packed: make(&blur, "blur_v_packed"),
            downscale: make(&downscale, "downscale"),
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
        let module = wgpu::naga::front::wgsl::parse_str(super::super::STREAM_WGSL).expect("stream.wgsl parses");
        wgpu::naga::valid::Validator::new(Default::default(), wgpu::naga::valid::Capabilities::default())
            .validate(&module)
            .expect("stream.wgsl validates");
    }
}
