// Separable Gaussian blur over one band, with the color stages fused in.
//
// The first horizontal pass reads the packed pixels and the last vertical
// pass writes them, so a one-blur plan is two passes over the frame with
// one f32 intermediate. Because the weights sum to one, an affine color
// stage commutes with the blur: the stage before a blur is applied at the
// end of its horizontal pass, the stage after it at the end of the
// vertical pass.
//
// Horizontal taps clamp to the row; vertical taps clamp to the band's
// rows. A band carries `radius` rows of halo per blur on each side that is
// not a frame edge, so clamping inside the halo never reaches the rows that
// are written out.

@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(64, 4)
fn blur_h_packed(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.rows) { return; }
    let r = i32(params.radius);
    let last = i32(params.width) - 1;
    let row = gid.y * params.width;
    var acc = vec4<f32>(0.0);
    for (var t = 0; t <= 2 * r; t++) {
        acc += weights[t] * load_px(row + u32(clamp(i32(gid.x) + t - r, 0, last)));
    }
    dst[row + gid.x] = apply_affine(acc);
}

@compute @workgroup_size(64, 4)
fn blur_h(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.rows) { return; }
    let r = i32(params.radius);
    let last = i32(params.width) - 1;
    let row = gid.y * params.width;
    var acc = vec4<f32>(0.0);
    for (var t = 0; t <= 2 * r; t++) {
        acc += weights[t] * src[row + u32(clamp(i32(gid.x) + t - r, 0, last))];
    }
    dst[row + gid.x] = apply_affine(acc);
}

fn vertical(x: u32, y: u32) -> vec4<f32> {
    let r = i32(params.radius);
    let last = i32(params.rows) - 1;
    var acc = vec4<f32>(0.0);
    for (var t = 0; t <= 2 * r; t++) {
        acc += weights[t] * src[u32(clamp(i32(y) + t - r, 0, last)) * params.width + x];
    }
    return apply_affine(acc);
}

@compute @workgroup_size(64, 4)
fn blur_v(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.rows) { return; }
    dst[gid.y * params.width + gid.x] = vertical(gid.x, gid.y);
}

// Only the band's output rows: halo rows are never computed.
@compute @workgroup_size(64, 4)
fn blur_v_packed(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.store_rows) { return; }
    store_px(gid.y * params.width + gid.x, vertical(gid.x, gid.y + params.first_row));
}
