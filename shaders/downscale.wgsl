// Area-average downscale for previews: one band's results (in `packed`,
// from row 0, `store_rows` rows) averaged over `radius` x `radius` blocks
// into `small`, RGBA8, one u32 per output pixel, rows from `first_row`
// (0: each band has `small` to itself; a buffer copy after the band's
// pass puts its rows in place in the preview's readback).
// Blocks at the right and bottom edges average the pixels that exist.
// Bands start on multiples of 8, so no block straddles two bands.

@group(0) @binding(5) var<storage, read_write> small: array<u32>;

@compute @workgroup_size(64, 4)
fn downscale(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = params.radius;
    let out_w = (params.width + s - 1u) / s;
    let out_rows = (params.store_rows + s - 1u) / s;
    if (gid.x >= out_w || gid.y >= out_rows) { return; }
    let x0 = gid.x * s;
    let y0 = gid.y * s;
    let x1 = min(x0 + s, params.width);
    let y1 = min(y0 + s, params.store_rows);
    var acc = vec4<f32>(0.0);
    for (var y = y0; y < y1; y++) {
        for (var x = x0; x < x1; x++) {
            acc += load_px(y * params.width + x);
        }
    }
    let avg = acc / f32((x1 - x0) * (y1 - y0));
    let q = vec4<u32>(floor(clamp(avg, vec4<f32>(0.0), vec4<f32>(1.0)) * 255.0 + 0.5));
    small[(params.first_row + gid.y) * out_w + gid.x] = q.x | (q.y << 8u) | (q.z << 16u) | (q.w << 24u);
}
