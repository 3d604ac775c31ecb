// Separable Gaussian blur over the f32 RGBA scratch of one band.
//
// Horizontal taps clamp to the row; vertical taps clamp to the band's rows.
// A band carries `radius` rows of halo per blur on each side that is not a
// frame edge, so the clamping inside the halo never reaches the rows that
// are stored. `blur_v` applies the color ops that follow the blur.

@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(64, 4)
fn blur_h(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.rows) { return; }
    let r = i32(params.radius);
    let last = i32(params.width) - 1;
    let row = gid.y * params.width;
    var acc = vec4<f32>(0.0);
    for (var t = 0; t <= 2 * r; t++) {
        let sx = u32(clamp(i32(gid.x) + t - r, 0, last));
        acc += weights[t] * src[row + sx];
    }
    dst[row + gid.x] = acc;
}

@compute @workgroup_size(64, 4)
fn blur_v(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.rows) { return; }
    let r = i32(params.radius);
    let last = i32(params.rows) - 1;
    var acc = vec4<f32>(0.0);
    for (var t = 0; t <= 2 * r; t++) {
        let sy = u32(clamp(i32(gid.y) + t - r, 0, last));
        acc += weights[t] * src[sy * params.width + gid.x];
    }
    dst[gid.y * params.width + gid.x] = apply_affine(acc);
}
