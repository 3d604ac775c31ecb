// A plan with no blur: one pass, packed in, fused color stage, packed out.

@compute @workgroup_size(64, 4)
fn color(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.rows) { return; }
    let i = gid.y * params.width + gid.x;
    store_px(i, apply_affine(load_px(i)));
}
