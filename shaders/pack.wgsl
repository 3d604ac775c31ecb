// Conversions between packed integer frames and the f32 RGBA scratch the
// other kernels work in. `load*` applies the plan's first color stage;
// `store*` clamps to [0, 1] and rounds half up, like the CPU backend.
//
// Packed layouts (little-endian words, as the host frame's bytes are):
//   RGBA8:  one u32 per pixel, r in the low byte.
//   RGBA16: two u32 per pixel, (r | g << 16), (b | a << 16).

@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> scratch: array<vec4<f32>>;

fn in_band(gid: vec3<u32>, rows: u32) -> bool {
    return gid.x < params.width && gid.y < rows;
}

@compute @workgroup_size(64, 4)
fn load8(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (!in_band(gid, params.rows)) { return; }
    let i = gid.y * params.width + gid.x;
    let w = packed[i];
    let p = vec4<f32>(f32(w & 0xffu), f32((w >> 8u) & 0xffu), f32((w >> 16u) & 0xffu), f32(w >> 24u)) / 255.0;
    scratch[i] = apply_affine(p);
}

@compute @workgroup_size(64, 4)
fn load16(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (!in_band(gid, params.rows)) { return; }
    let i = gid.y * params.width + gid.x;
    let w0 = packed[2u * i];
    let w1 = packed[2u * i + 1u];
    let p = vec4<f32>(f32(w0 & 0xffffu), f32(w0 >> 16u), f32(w1 & 0xffffu), f32(w1 >> 16u)) / 65535.0;
    scratch[i] = apply_affine(p);
}

fn quantize(v: vec4<f32>, max_value: f32) -> vec4<u32> {
    return vec4<u32>(floor(clamp(v, vec4<f32>(0.0), vec4<f32>(1.0)) * max_value + 0.5));
}

@compute @workgroup_size(64, 4)
fn store8(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (!in_band(gid, params.store_rows)) { return; }
    let q = quantize(scratch[(gid.y + params.first_row) * params.width + gid.x], 255.0);
    packed[gid.y * params.width + gid.x] = q.x | (q.y << 8u) | (q.z << 16u) | (q.w << 24u);
}

@compute @workgroup_size(64, 4)
fn store16(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (!in_band(gid, params.store_rows)) { return; }
    let q = quantize(scratch[(gid.y + params.first_row) * params.width + gid.x], 65535.0);
    let i = gid.y * params.width + gid.x;
    packed[2u * i] = q.x | (q.y << 16u);
    packed[2u * i + 1u] = q.z | (q.w << 16u);
}
