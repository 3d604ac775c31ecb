//! Frame slots: sizing the pool and the readback ring to the budget, and
//! taking a slot to start a frame.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{GPU_DEPTH, Shared, SlotKind, Stage, describe, ring_size};
use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gpu::{FrameShape, GpuBackend, GpuSlot, Readback, RunHold, StagingMaker};
use crate::ledger::{Ledger, human_bytes};
use crate::ops::Plan;
use crate::pool::{Lease, Pool, PoolSize, auto_cap};

/// Host memory an automatic pool of host frames (the CPU backend, or no
/// GPU work) may take: 8 GiB, sixty 8K frames, more than any machine's
/// cores keep busy. A `--pool N` is taken as given.
const HOST_POOL_BYTES: u64 = 8 << 30;
use crate::preview::TraceEvent;
use crate::priority::Priority;

/// Takes a slot for frame `number` and marks its start, once no preview
/// holds the engine's gate; `None` when the run stops first. While a
/// preview waits for VRAM, free slots are retired here rather than handed
/// out. With GPU slots (`gpu`: the shape and bytes of one), a slot given
/// back to a preview earlier is replaced first while the budget has room.
/// `alone`: the run has no compute stage (no ops), so it also waits while
/// a preview renders.
///
/// Frames start in read order (`position`): decoders that each wait for a
/// slot a few ms at a time would otherwise let later frames take it again
/// and again, and a failing frame could be reached only after many more.
pub(super) fn start_frame(
    engine: &Engine,
    shared: &Shared<'_>,
    pool: &Pool<SlotKind>,
    (position, number): (usize, u64),
    gpu: Option<(FrameShape, u64)>,
    alone: bool,
) -> Option<Lease<SlotKind>> {
    if shared.job.inject_panic == Some((Stage::Start, number)) {
        panic!("injected test panic");
    }
    loop {
        if shared.stopping() {
            return None;
        }
        {
            let turn = crate::lock(&shared.turn);
            if *turn != position {
                let wait = shared.next_turn.wait_timeout(turn, Duration::from_millis(20));
                drop(wait.unwrap_or_else(|p| p.into_inner()));
                continue;
            }
        }
        let refused_lately =
            || crate::lock(&shared.regrow_refused).is_some_and(|at| at.elapsed() < REGROW_AFTER_REFUSAL);
        if let Some((shape, bytes)) = gpu
            && (pool.live() == 0 || !refused_lately())
            && let Err(e) = regrow(engine, pool, shape, bytes, &shared.plan)
        {
            if pool.live() > 0 {
                // With slots left, the run goes on with fewer.
                *crate::lock(&shared.regrow_refused) = Some(Instant::now());
            } else {
                // Previews took every slot and the device will not give
                // one back (the budget is above what it has, or another
                // process took the memory): no frame could start, so the
                // run ends with that error rather than waiting for a slot
                // forever.
                crate::lock(&shared.fatal).get_or_insert(e);
                shared.stop.store(true, Ordering::SeqCst);
                shared.abort.store(true, Ordering::SeqCst);
                shared.next_turn.notify_all();
                return None;
            }
        }
        // A preview holds the gate: wait without a slot.
        if !engine.core.gate.pass(Duration::from_millis(20), || true) {
            pool.shed();
            continue;
        }
        if alone && !engine.backend().wait_clear_above(Priority::Export, Duration::from_millis(20)) {
            continue;
        }
        let Some(slot) = pool.acquire_timeout(Duration::from_millis(20)) else { continue };
        // A stop decided while it waited (a failed frame hands its slot
        // back after it stops the run): no frame starts after it.
        if shared.stopping() {
            return None;
        }
        // The start is traced only if it happens before any preview raises
        // the gate: one raised since the check above sends the slot back.
        // An export without a compute stage never meets a preview at the
        // backend, so it also waits while one is rendering (announced,
        // which a preview is from before it lowers the gate).
        let start = || {
            let held = alone && engine.backend().waiting_above(Priority::Export);
            if !held {
                engine.trace(TraceEvent::ExportDecodeStart(number));
            }
            !held
        };
        if engine.core.gate.pass(Duration::ZERO, start) {
            *crate::lock(&shared.turn) += 1;
            shared.next_turn.notify_all();
            return Some(slot);
        }
        if alone {
            engine.backend().wait_clear_above(Priority::Export, Duration::from_millis(20));
        }
    }
}

/// How long a slot the device refused is not asked for again.
const REGROW_AFTER_REFUSAL: Duration = Duration::from_secs(1);

/// Puts back a GPU slot the pool gave to previews, once they are done
/// with the memory (reclaiming what they left idle first) and none is
/// waiting at the gate. An error is the device refusing the slot's
/// buffers; no room in the budget is not one (it is tried again later).
fn regrow(engine: &Engine, pool: &Pool<SlotKind>, shape: FrameShape, bytes: u64, plan: &Plan) -> Result<()> {
    let ledger = engine.ledger();
    let room = || ledger.current() + bytes <= ledger.budget();
    let wanted = || pool.wants_slot() && !engine.core.gate.is_raised();
    if !wanted() {
        return Ok(());
    }
    if !room() {
        engine.reclaim_preview_memory(Some((shape, plan)));
    }
    if !room() {
        return Ok(());
    }
    let backend = engine.backend().lock(Priority::Export);
    // Asked again under the lock: a preview may have come since. The
    // memory is taken under it; the slot is made after (46 ms at 8K), so
    // a preview asked meanwhile does not wait for it.
    let Backend::Gpu(g) = &*backend else { return Ok(()) };
    let maker = g.staging_maker();
    let Some(reservation) = (wanted() && room()).then(|| maker.reserve_slot(shape).ok()).flatten() else {
        return Ok(());
    };
    drop(backend);
    // A preview that came while the slot was made (the gate is raised
    // without the backend lock) gets its memory back at once: dropped, the
    // slot frees it, rather than sitting in the pool until shed. (This
    // narrows the window; one that comes after is served by shedding.)
    let slot = maker.new_slot_in(shape, reservation)?;
    if wanted() {
        let _ = pool.replenish(SlotKind::Gpu(slot));
    }
    Ok(())
}

/// How `free` bytes split into (slots, readback buffers). Slots come
/// first: each is a frame decoding or on the GPU, and decode parallelism is
/// what a many-core machine needs. The ring gets [`GPU_DEPTH`] buffers, or
/// one where a second would cost the second slot (two slots let a decode
/// run beside the GPU, worth more than two frames on it), slots take what fits up to
/// [`auto_cap`], and the ring grows towards [`ring_size`] only with what
/// is left. Neither has more than `frames` (a still, a short shot: one
/// per frame is all a run can use; past that they only hold VRAM). A
/// fixed pool size leaves the ring the rest, at least one. (A slot or
/// buffer of 0 bytes counts as 1: a split never divides by zero.)
pub fn split_budget(
    free: u64,
    slot: u64,
    readback: u64,
    threads: usize,
    frames: usize,
    pool: PoolSize,
) -> (usize, usize) {
    let (slot, readback, frames) = (slot.max(1), readback.max(1), frames.max(1));
    let ideal = ring_size(threads).min(frames);
    match pool {
        PoolSize::Fixed(n) => {
            (n, ((free.saturating_sub((n as u64).saturating_mul(slot)) / readback) as usize).clamp(1, ideal))
        }
        PoolSize::Auto => {
            let fit = |ring: usize| (free.saturating_sub((ring as u64).saturating_mul(readback)) / slot) as usize;
            let base = if fit(GPU_DEPTH) >= fit(1).clamp(1, 2) { GPU_DEPTH } else { 1 }.min(ideal);
            let cap = auto_cap(threads, true).min(frames);
            let n = fit(base).clamp(1, cap);
            (n, ((free.saturating_sub(n as u64 * slot) / readback) as usize).clamp(base, ideal))
        }
    }
}

/// The refusal of a budget that cannot hold one frame of `shape` (a slot,
/// a readback buffer and `kernels` bytes of kernel buffers) beside `held`
/// bytes that others hold.
fn one_frame_refused(shape: FrameShape, kernels: u64, budget: u64, held: u64) -> Error {
    let slot = GpuBackend::slot_bytes(shape);
    let readback = GpuBackend::readback_bytes(shape);
    let held = if held > 0 {
        format!(" beside {} held by previews and other grades", human_bytes(held))
    } else {
        String::new()
    };
    let (need, budget) = crate::ledger::human_bytes_pair(one_frame_bytes(shape, kernels), budget);
    Error::Budget(format!(
        "one {} frame needs {need} ({} for its slot's upload staging, {} for a readback buffer, {} of kernel buffers), more than the {budget} budget{held}",
        describe(shape),
        human_bytes(slot),
        human_bytes(readback),
        human_bytes(kernels),
    ))
}

/// Refuses, up front, a budget that cannot hold one frame of `shape` on
/// the GPU with `plan` (the least any export path needs), in the terms a
/// user can act on rather than those of the buffer that would fail first.
///
/// # Errors
/// [`Error::Budget`] with the sizes.
pub(crate) fn check_one_frame_fits(gpu: &GpuBackend, shape: FrameShape, plan: &Plan, budget: u64) -> Result<()> {
    one_frame_fits(shape, gpu.compute_bytes(shape, plan)?, budget)
}

/// Refuses a pool that no wait for memory could make fit: more than the
/// whole budget holds beside nothing else. One frame is an auto pool's
/// least; a fixed pool of N needs its N slots beside one readback buffer
/// and the kernel buffers. (Beside what previews hold it may not fit now,
/// and fit once they give it back: not refused here.)
///
/// # Errors
/// [`Error::Budget`] with the sizes.
pub(crate) fn check_pool_fits(
    gpu: &GpuBackend,
    shape: FrameShape,
    plan: &Plan,
    pool: PoolSize,
    budget: u64,
) -> Result<()> {
    let kernels = gpu.compute_bytes(shape, plan)?;
    one_frame_fits(shape, kernels, budget)?;
    let (slot, readback) = (GpuBackend::slot_bytes(shape), GpuBackend::readback_bytes(shape));
    match pool {
        PoolSize::Fixed(n) if kernels.saturating_add(readback).saturating_add(n as u64 * slot) > budget => {
            let fit = budget.saturating_sub(kernels + readback) / slot;
            Err(slots_refused(n, fit as usize, (slot, readback, kernels), budget))
        }
        _ => Ok(()),
    }
}

/// The refusal of `n` slots of which `fit` fit in `budget` beside the
/// kernel buffers and a readback buffer (`slot`, `readback`, `kernels`
/// bytes).
fn slots_refused(n: usize, fit: usize, (slot, readback, kernels): (u64, u64, u64), budget: u64) -> Error {
    Error::Budget(format!(
        "{n} slots of {} each do not fit: {fit} fit in the {} budget beside {} of kernel buffers and a readback buffer of {}",
        human_bytes(slot),
        human_bytes(budget),
        human_bytes(kernels),
        human_bytes(readback)
    ))
}

/// [`check_one_frame_fits`] with the kernel bytes known.
fn one_frame_fits(shape: FrameShape, kernels: u64, budget: u64) -> Result<()> {
    if one_frame_bytes(shape, kernels) > budget { Err(one_frame_refused(shape, kernels, budget, 0)) } else { Ok(()) }
}

/// The least VRAM an export of frames of `shape` runs in: a slot, a
/// readback buffer and `kernels` bytes of kernel buffers.
pub(crate) fn one_frame_bytes(shape: FrameShape, kernels: u64) -> u64 {
    kernels.saturating_add(GpuBackend::slot_bytes(shape) + GpuBackend::readback_bytes(shape))
}

/// The frame slots and, on the GPU, the readback ring: staging counted by
/// the ledger, or host permits.
pub(super) struct Staging {
    pub(super) slots: Vec<SlotKind>,
    /// Ledger bytes of one slot (a host frame's bytes for host permits).
    pub(super) slot_bytes: u64,
    pub(super) ring: Vec<Readback>,
    /// The run's kernel set, kept from eviction while the run lasts.
    pub(super) hold: RunHold,
}

/// What a run asks of its pool: the size asked for, the workers that can
/// be busy, the frames it has.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sizing {
    pub(super) pool: PoolSize,
    pub(super) threads: usize,
    pub(super) frames: usize,
}

/// Sizes the slots, under the backend lock: the kernel set for `plan` is
/// made (or found) first, then what is left of the budget is split. The
/// slots themselves are made by [`PoolPlan::make`], once the lock is let go:
/// a preview does not wait behind an export making its pool.
pub(super) fn size_slots(
    backend: &mut Backend,
    ledger: &Arc<Ledger>,
    shape: FrameShape,
    plan: &Plan,
    identity: bool,
    Sizing { pool, threads, frames }: Sizing,
) -> Result<PoolPlan> {
    let gpu: &mut GpuBackend = match backend {
        Backend::Gpu(g) if !identity => g,
        _ => {
            // Host frames: as many as help, and as fit HOST_POOL_BYTES
            // (a thousand threads' worth of 8K frames would not), at
            // least two.
            let host = (HOST_POOL_BYTES / shape.frame_bytes().max(1)).max(2) as usize;
            let n = match pool {
                PoolSize::Fixed(n) => n,
                PoolSize::Auto => auto_cap(threads, false).min(host).min(frames).max(1),
            };
            let slots = (0..n).map(|_| SlotKind::Host).collect();
            let hold = RunHold::default();
            return Ok(PoolPlan::Host(Staging { slots, slot_bytes: shape.frame_bytes(), ring: Vec::new(), hold }));
        }
    };
    // Before the budget: no budget makes a slot the adapter cannot.
    gpu.check_frame_buffer(shape)?;
    let kernels = gpu.compute_bytes(shape, plan)?;
    let slot = GpuBackend::slot_bytes(shape);
    let readback = GpuBackend::readback_bytes(shape);
    let budget = ledger.budget();
    let refuse = |held: u64| one_frame_refused(shape, kernels, budget, held);
    one_frame_fits(shape, kernels, budget)?;
    // The kernel set first: one already built for this grade (an earlier
    // export, a preview) is used, not counted twice, and cached sets of
    // other grades make room for it.
    match gpu.prepare(shape, plan) {
        Err(Error::Budget(_)) => return Err(refuse(ledger.current())),
        r => r?,
    }
    let hold = gpu.hold_set(shape, plan);
    // The kernel sets earlier exports left (another grade, another size)
    // give way to the pool this one wants, its slots and its whole ring
    // (what a budget without end would split into), rather than shrink it.
    let (wanted, ring) = split_budget(u64::MAX, slot, readback, threads, frames, pool);
    let wanted_bytes = (wanted as u64).saturating_mul(slot).saturating_add((ring as u64).saturating_mul(readback));
    if ledger.current().saturating_add(wanted_bytes) > budget {
        gpu.evict_export_sets();
    }
    if ledger.current() + readback + slot > budget {
        return Err(refuse(ledger.current().saturating_sub(kernels)));
    }
    let free = budget.saturating_sub(ledger.current());
    let (n, rings) = split_budget(free, slot, readback, threads, frames, pool);
    let fitted = n as u64 * slot + rings as u64 * readback <= free;
    Ok(PoolPlan::Gpu { maker: gpu.staging_maker(), shape, n, rings, threads, kernels, fitted, hold })
}

/// A pool sized, to be made.
pub(super) enum PoolPlan {
    /// Host permits: nothing to make.
    Host(Staging),
    /// `n` GPU slots and `rings` readback buffers; `fitted`: they fit in
    /// what was free when sized (a fixed pool may not).
    Gpu {
        maker: StagingMaker,
        shape: FrameShape,
        n: usize,
        rings: usize,
        threads: usize,
        kernels: u64,
        fitted: bool,
        /// The run's kernel set, held from its sizing to its end.
        hold: RunHold,
    },
}

impl PoolPlan {
    /// Whether what it will make fit in the budget when it was sized: a
    /// budget error in [`make`](Self::make) is then another's taking.
    pub(super) fn fitted(&self) -> bool {
        match self {
            PoolPlan::Host(_) => true,
            PoolPlan::Gpu { fitted, .. } => *fitted,
        }
    }

    /// Makes the staging, without the backend lock. Memory taken since the
    /// sizing (a preview, another run) makes it a budget error: the caller
    /// sizes again.
    pub(super) fn make(self) -> Result<Staging> {
        let (maker, shape, n, rings, threads, kernels, hold) = match self {
            PoolPlan::Host(staging) => return Ok(staging),
            PoolPlan::Gpu { maker, shape, n, rings, threads, kernels, hold, .. } => {
                (maker, shape, n, rings, threads, kernels, hold)
            }
        };
        let ring = (0..rings).map(|_| maker.new_readback(shape)).collect::<Result<Vec<_>>>()?;
        let made = new_slots(&maker, shape, n, threads);
        let fit = made.iter().filter(|s| s.is_ok()).count();
        let slot = GpuBackend::slot_bytes(shape);
        let sizes = (slot, GpuBackend::readback_bytes(shape), kernels);
        let slots = made.into_iter().collect::<Result<Vec<_>>>().map_err(|e| match e {
            Error::Budget(_) => slots_refused(n, fit, sizes, maker.budget()),
            e => e,
        })?;
        Ok(Staging { slots: slots.into_iter().map(SlotKind::Gpu).collect(), slot_bytes: slot, ring, hold })
    }
}

/// `n` new slots, made on up to `threads` threads at once. A slot is
/// mapped from birth, and wgpu zeroes its memory as it maps it: 46 ms per
/// 8K slot on the H100 machine (write-combined memory across the bus),
/// 86 ms on the 2-core VM, so 19 slots made one after another kept an 8K
/// run from starting for 0.87 s.
fn new_slots(gpu: &StagingMaker, shape: FrameShape, n: usize, threads: usize) -> Vec<Result<GpuSlot>> {
    let per = n.div_ceil(threads.clamp(1, n.max(1)));
    if per >= n {
        return (0..n).map(|_| gpu.new_slot(shape)).collect();
    }
    let make = move |from: usize| (from..(from + per).min(n)).map(|_| gpu.new_slot(shape)).collect::<Vec<_>>();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .step_by(per)
            // A thread the OS will not start: that share is made here.
            .map(|from| std::thread::Builder::new().spawn_scoped(scope, move || make(from)).map_err(|_| from))
            .collect();
        let made = |w: std::result::Result<std::thread::ScopedJoinHandle<'_, _>, usize>| match w {
            Ok(w) => w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(from) => make(from),
        };
        workers.into_iter().flat_map(made).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_before_a_deep_readback_ring() {
        let mib = 1u64 << 20;
        let gib = 1u64 << 30;
        // 8K RGBA16 beside ~320 MiB of kernel buffers in the default 2 GiB:
        // four slots and two readback buffers, not a full ring and one slot.
        let frame16 = 7680 * 4320 * 8;
        let free = 2 * gib - 320 * mib;
        let (slots, ring) = split_budget(free, frame16 + 48, frame16, 16, usize::MAX, PoolSize::Auto);
        assert_eq!((slots, ring), (4, 2));
        assert!(slots as u64 * (frame16 + 48) + ring as u64 * frame16 <= free);
        // Small frames: every slot that helps and the whole ring.
        assert_eq!(split_budget(free, 1000, 1000, 16, usize::MAX, PoolSize::Auto), (auto_cap(16, true), ring_size(16)));
        // Room for one frame of each only.
        assert_eq!(split_budget(2100, 1050, 1000, 4, usize::MAX, PoolSize::Auto), (1, 1));
        // Two slots and one readback buffer rather than one slot and two.
        assert_eq!(split_budget(3100, 1000, 1000, 4, usize::MAX, PoolSize::Auto), (2, 1));
        // A fixed pool leaves the ring the rest, at least one.
        assert_eq!(split_budget(12_000, 1000, 1000, 4, usize::MAX, PoolSize::Fixed(5)), (5, ring_size(4)));
        assert_eq!(split_budget(5_500, 1000, 1000, 4, usize::MAX, PoolSize::Fixed(5)), (5, 1));
        // A short sequence takes no more than one slot and one readback
        // buffer per frame, however much room there is.
        assert_eq!(split_budget(free, 1000, 1000, 16, 1, PoolSize::Auto), (1, 1));
        assert_eq!(split_budget(free, 1000, 1000, 16, 3, PoolSize::Auto), (3, 3));
        assert_eq!(split_budget(free, 1000, 1000, 16, 0, PoolSize::Auto), (1, 1));
        // Edges a caller of the public function may pass: no panic.
        assert_eq!(split_budget(free, 0, 0, usize::MAX, 4, PoolSize::Auto).0, 4);
        assert_eq!(split_budget(free, 1000, 1000, 4, 4, PoolSize::Fixed(usize::MAX)), (usize::MAX, 1));
        assert_eq!(split_budget(free, 1000, u64::MAX, 4, 4, PoolSize::Auto).1, 1);
    }
}
