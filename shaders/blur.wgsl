// Separable Gaussian blur over one band, with the color stages fused in.
//
// The first horizontal pass reads the packed pixels and the last vertical
// pass writes them, so a one-blur plan is two passes over the frame with
// one f32 intermediate. Because the weights sum to one, an affine color
// stage commutes with the blur: the stage before a blur is applied at the
// end of its horizontal pass (or, when its gain is large, to each pixel
// as it is loaded), the stage after it at the end of the vertical pass.
//
// Horizontal taps clamp to the row; vertical taps clamp to the band's
// rows. A band carries `radius` rows of halo per blur on each side that is
// not a frame edge, so clamping inside the halo never reaches the rows that
// are written out.
//
// Each invocation computes four neighbouring outputs (along the row for
// the horizontal pass, down the column for the vertical one). Their
// windows overlap in all but three taps, so every loaded pixel feeds each
// output whose window covers it: 4 + 2r loads for four outputs instead of
// 4 (2r + 1). Each output still sums its taps in order t = 0..2r, as the CPU
// backend does.

@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

// Outputs per invocation (`BLUR_OUTPUTS` in src/gpu/kernels.rs).
const OUTPUTS: i32 = 4;

// The four running sums of one invocation.
struct Sums {
    s0: vec4<f32>,
    s1: vec4<f32>,
    s2: vec4<f32>,
    s3: vec4<f32>,
}

// Adds the `j`-th loaded pixel `v` (window position j - r relative to the
// first output) to every sum whose taps 0..=2r cover it.
fn feed(sums: ptr<function, Sums>, j: i32, v: vec4<f32>) {
    let n = 2 * i32(params.radius);
    if (j <= n) { (*sums).s0 += weights[j] * v; }
    if (j >= 1 && j <= n + 1) { (*sums).s1 += weights[j - 1] * v; }
    if (j >= 2 && j <= n + 2) { (*sums).s2 += weights[j - 2] * v; }
    if (j >= 3) { (*sums).s3 += weights[j - 3] * v; }
}

fn zero() -> Sums {
    return Sums(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
}

// The sums through the color stage.
fn through_affine(s: Sums) -> Sums {
    return Sums(apply_affine(s.s0), apply_affine(s.s1), apply_affine(s.s2), apply_affine(s.s3));
}

// Writes the sums to `dst` at `i`, `i + step`, .. for as many of the four
// as `left` (outputs remaining in the row or column) allows.
fn store_scratch(s: Sums, i: u32, step: u32, left: u32) {
    dst[i] = s.s0;
    if (left > 1u) { dst[i + step] = s.s1; }
    if (left > 2u) { dst[i + 2u * step] = s.s2; }
    if (left > 3u) { dst[i + 3u * step] = s.s3; }
}

@compute @workgroup_size(64, 4)
fn blur_h_packed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x0 = gid.x * u32(OUTPUTS);
    if (x0 >= params.width || gid.y >= params.rows) { return; }
    let r = i32(params.radius);
    let last = i32(params.width) - 1;
    let row = gid.y * params.width;
    var sums = zero();
    // A strong color stage goes on each loaded pixel, as the CPU backend
    // applies it: after the sum, the sum's rounding error is multiplied by
    // the stage's gain (a contrast of 1000 put a 16-bit result 5 steps
    // off). A mild one goes once per output, after the sum (the weights sum
    // to one, so the two orders agree in exact arithmetic): on a software
    // rasterizer, per load costs 35 % more time per blur.
    let at_load = params.affine_at_load != 0u;
    for (var j = 0; j <= 2 * r + OUTPUTS - 1; j++) {
        var v = load_px(row + u32(clamp(i32(x0) + j - r, 0, last)));
        if (at_load) { v = apply_affine(v); }
        feed(&sums, j, v);
    }
    if (!at_load) { sums = through_affine(sums); }
    store_scratch(sums, row + x0, 1u, params.width - x0);
}

@compute @workgroup_size(64, 4)
fn blur_h(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x0 = gid.x * u32(OUTPUTS);
    if (x0 >= params.width || gid.y >= params.rows) { return; }
    let r = i32(params.radius);
    let last = i32(params.width) - 1;
    let row = gid.y * params.width;
    var sums = zero();
    for (var j = 0; j <= 2 * r + OUTPUTS - 1; j++) {
        feed(&sums, j, src[row + u32(clamp(i32(x0) + j - r, 0, last))]);
    }
    store_scratch(through_affine(sums), row + x0, 1u, params.width - x0);
}

// Vertical sums for the four outputs from band row `y` down column `x`.
fn vertical(x: u32, y: u32) -> Sums {
    let r = i32(params.radius);
    let last = i32(params.rows) - 1;
    var sums = zero();
    for (var j = 0; j <= 2 * r + OUTPUTS - 1; j++) {
        feed(&sums, j, src[u32(clamp(i32(y) + j - r, 0, last)) * params.width + x]);
    }
    return sums;
}

@compute @workgroup_size(64, 4)
fn blur_v(@builtin(global_invocation_id) gid: vec3<u32>) {
    let y0 = gid.y * u32(OUTPUTS);
    if (gid.x >= params.width || y0 >= params.rows) { return; }
    store_scratch(through_affine(vertical(gid.x, y0)), y0 * params.width + gid.x, params.width, params.rows - y0);
}

// Only the band's output rows: halo rows are never computed.
@compute @workgroup_size(64, 4)
fn blur_v_packed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let y0 = gid.y * u32(OUTPUTS);
    if (gid.x >= params.width || y0 >= params.store_rows) { return; }
    let s = vertical(gid.x, y0 + params.first_row);
    let i = y0 * params.width + gid.x;
    let left = params.store_rows - y0;
    store_px(i, apply_affine(s.s0));
    if (left > 1u) { store_px(i + params.width, apply_affine(s.s1)); }
    if (left > 2u) { store_px(i + 2u * params.width, apply_affine(s.s2)); }
    if (left > 3u) { store_px(i + 3u * params.width, apply_affine(s.s3)); }
}
