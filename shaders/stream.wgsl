// The memory-bandwidth reference: every invocation copies 16 bytes, so a
// dispatch reads and writes each byte of a buffer once and does nothing
// else. The frame kernels' GB/s are read against what this reaches.

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

// Workgroups per row of the 2-D dispatch (`STREAM_ROW` in src/gpu/stream.rs).
const ROW: u32 = 4096u;

@compute @workgroup_size(256)
fn stream(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let i = (group.y * ROW + group.x) * 256u + lane;
    if (i < arrayLength(&src)) {
        dst[i] = src[i];
    }
}
