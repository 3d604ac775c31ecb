// Shared by every framepipe kernel; prepended to each kernel file.
//
// Keep in sync with `Params` in src/gpu/kernels.rs.
struct Params {
    // Pixels per row.
    width: u32,
    // Rows held in the scratch buffers for this band (halo included).
    rows: u32,
    // First scratch row that `store` writes out.
    first_row: u32,
    // Rows that `store` writes out.
    store_rows: u32,
    // Blur radius in taps (blur kernels only).
    radius: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // Affine color stage: rgb' = (m0.xyz·rgb + m0.w, m1.., m2..); alpha kept.
    m0: vec4<f32>,
    m1: vec4<f32>,
    m2: vec4<f32>,
}

@group(0) @binding(0) var<uniform> params: Params;

fn apply_affine(p: vec4<f32>) -> vec4<f32> {
    // Same association as the CPU backend: ((a·r + b·g) + c·b) + offset.
    let r = params.m0.x * p.x + params.m0.y * p.y + params.m0.z * p.z + params.m0.w;
    let g = params.m1.x * p.x + params.m1.y * p.y + params.m1.z * p.z + params.m1.w;
    let b = params.m2.x * p.x + params.m2.y * p.y + params.m2.z * p.z + params.m2.w;
    return vec4<f32>(r, g, b, p.w);
}
