// Shared by every framepipe kernel; prepended to each kernel file.
//
// Keep in sync with `Params` in src/gpu/kernels.rs.
struct Params {
    // Pixels per row.
    width: u32,
    // Rows of the band held in `packed` on input and in the f32 scratch
    // (halo included).
    rows: u32,
    // First band row that the final kernel writes out (downscale: the
    // first row of `small` that this band's blocks fill).
    first_row: u32,
    // Rows that the final kernel writes out (to `packed`, from row 0).
    store_rows: u32,
    // Blur radius in taps (downscale: the block size, the scale factor).
    radius: u32,
    // 0: RGBA8, one u32 per pixel. 1: RGBA16, two u32 per pixel.
    sixteen: u32,
    // 1: apply the color stage to each loaded pixel, not to the blurred sum
    // (the first horizontal blur pass, for a stage of large gain).
    affine_at_load: u32,
    _pad: u32,
    // Affine color stage: rgb' = (m0.xyz·rgb + m0.w, m1.., m2..); alpha kept.
    m0: vec4<f32>,
    m1: vec4<f32>,
    m2: vec4<f32>,
}

// A read-only storage buffer, not a uniform: Mesa's lavapipe (the software
// Vulkan driver CI runs on) specialises a shader for the values of any
// uniform that bounds a loop, compiling and leaking a variant per dispatch
// (RSS grew ~0.3 MB per blurred frame). Every thread reads the same few
// words either way, so hardware GPUs serve it from cache just the same.
@group(0) @binding(0) var<storage, read> params: Params;

// The band's packed pixels, as the host frame's bytes are (little-endian):
//   RGBA8:  one u32 per pixel, r in the low byte.
//   RGBA16: two u32 per pixel, (r | g << 16), (b | a << 16).
// Read on the way in; overwritten from row 0 with the results.
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;

fn apply_affine(p: vec4<f32>) -> vec4<f32> {
    // Same association as the CPU backend: ((a·r + b·g) + c·b) + offset.
    let r = params.m0.x * p.x + params.m0.y * p.y + params.m0.z * p.z + params.m0.w;
    let g = params.m1.x * p.x + params.m1.y * p.y + params.m1.z * p.z + params.m1.w;
    let b = params.m2.x * p.x + params.m2.y * p.y + params.m2.z * p.z + params.m2.w;
    return vec4<f32>(r, g, b, p.w);
}

// Pixel `i` of `packed` as 0..1 values.
fn load_px(i: u32) -> vec4<f32> {
    if (params.sixteen == 0u) {
        let w = packed[i];
        return vec4<f32>(f32(w & 0xffu), f32((w >> 8u) & 0xffu), f32((w >> 16u) & 0xffu), f32(w >> 24u)) / 255.0;
    }
    let w0 = packed[2u * i];
    let w1 = packed[2u * i + 1u];
    return vec4<f32>(f32(w0 & 0xffffu), f32(w0 >> 16u), f32(w1 & 0xffffu), f32(w1 >> 16u)) / 65535.0;
}

// Clamps to [0, 1], rounds half up (like the CPU backend) and stores pixel `i`.
fn store_px(i: u32, v: vec4<f32>) {
    let c = clamp(v, vec4<f32>(0.0), vec4<f32>(1.0));
    if (params.sixteen == 0u) {
        let q = vec4<u32>(floor(c * 255.0 + 0.5));
        packed[i] = q.x | (q.y << 8u) | (q.z << 16u) | (q.w << 24u);
        return;
    }
    let q = vec4<u32>(floor(c * 65535.0 + 0.5));
    packed[2u * i] = q.x | (q.y << 16u);
    packed[2u * i + 1u] = q.z | (q.w << 16u);
}
