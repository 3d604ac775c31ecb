//! Host-visible staging: the frame slots decoders write into, the readback
//! buffers results come back through, and frames on their way between.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::ledger::Reservation;

use super::{FrameShape, GpuBackend};

/// Bands whose kernels are timed one by one. Past the last of these, the
/// rest share one bracket, which then takes in the copies between them
/// too (kernel time reads high). The count of bands follows the frame's
/// area and the blur's halo: an 8K frame at 16 bytes of scratch a pixel
/// is 4 bands of 128 MiB, 16K square 32; 64 pairs cost 3 KiB a slot.
pub(super) const TIMED_BANDS: usize = 64;

/// Bytes of a slot's timestamp queries: a pair of 8-byte queries per timed
/// band, their resolve buffer and its readback. Counted whether or not the
/// adapter has timestamps, so a slot's size does not depend on the adapter.
pub(super) const TIMER_BYTES: u64 = 3 * 16 * TIMED_BANDS as u64;

/// A slot's own timestamp queries: each frame in flight times its kernels
/// with its own queries, so frames on the GPU at once never share one. Each
/// band's passes are bracketed on their own and the spans summed, so the
/// copies between bands (which cross PCIe on a discrete GPU) are not
/// counted as kernel time.
pub(super) struct SlotTimer {
    pub(super) set: wgpu::QuerySet,
    pub(super) resolve: wgpu::Buffer,
    pub(super) read: wgpu::Buffer,
}

/// Host-visible staging a frame is decoded into: `upload`, kept mapped
/// while the slot is free. A pool of these is what bounds the frames being
/// decoded or on the GPU, in VRAM (well, mapped memory the driver counts)
/// and in host memory alike. Results come back through a [`Readback`] from
/// a ring shared by the whole run, so a slot is free again as soon as the
/// GPU has read it, not once its result has been copied out.
pub struct GpuSlot {
    pub(super) shape: FrameShape,
    pub(super) upload: wgpu::Buffer,
    pub(super) timer: Option<SlotTimer>,
    pub(super) _reservation: Reservation,
}

/// Host-visible staging one finished frame comes back through; a run
/// keeps a small ring of these (frames on the GPU plus frames being copied
/// out), not one per slot.
///
/// After [`InFlight::wait`] the result stays mapped until
/// [`Readback::take_result`] copies it out: any thread may do that, so the
/// frame-sized copy is not the GPU owner's work.
pub struct Readback {
    pub(super) shape: FrameShape,
    pub(super) buffer: wgpu::Buffer,
    /// Whether `buffer` holds a finished frame, mapped and not yet taken.
    pub(super) mapped: Arc<AtomicBool>,
    pub(super) _reservation: Reservation,
}

impl GpuSlot {
    /// The frame shape this slot holds.
    pub fn shape(&self) -> FrameShape {
        self.shape
    }

    /// Bytes this slot holds against the ledger.
    pub fn bytes(&self) -> u64 {
        self._reservation.bytes()
    }

    /// Copies a decoded frame's packed pixels into the mapped upload
    /// buffer. Any thread may call this.
    ///
    /// # Errors
    /// [`Error::Gpu`] if the data does not match the slot or it is not mapped.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        if data.len() as u64 != self.shape.frame_bytes() {
            return Err(Error::Gpu(format!(
                "frame of {} bytes does not fit a {}-byte slot",
                data.len(),
                self.shape.frame_bytes()
            )));
        }
        let mut view = self.upload.get_mapped_range_mut(..).map_err(|e| Error::Gpu(format!("upload staging: {e}")))?;
        view.slice(..).copy_from_slice(data);
        Ok(())
    }

    /// A writer into the mapped upload buffer, for a decoder that delivers
    /// the frame in pieces (see [`crate::io::decode_with`]). Any thread may
    /// call this while it holds the slot.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the upload buffer is not mapped.
    pub fn writer(&self) -> Result<SlotWriter> {
        let view = self.upload.get_mapped_range_mut(..).map_err(|e| Error::Gpu(format!("upload staging: {e}")))?;
        Ok(SlotWriter { view, len: self.shape.frame_bytes() as usize })
    }
}

impl Readback {
    /// Copies the finished frame out and unmaps the buffer, leaving it
    /// ready for its next frame. Any thread may call this.
    ///
    /// # Errors
    /// [`Error::Gpu`] when it holds no finished frame.
    pub fn take_result(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.copy_result(|view| out.extend_from_slice(view))?;
        Ok(out)
    }

    /// As [`Readback::take_result`], into `out` (`frame_bytes` long).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an `out` of another length (the frame
    /// stays, for a right one); [`Error::Gpu`] when it holds no finished
    /// frame.
    pub fn take_result_into(&self, out: &mut [u8]) -> Result<()> {
        self.check_len(out.len())?;
        self.copy_result(|view| out.copy_from_slice(view))
    }

    /// Refuses a destination that is not exactly one result long.
    pub(super) fn check_len(&self, len: usize) -> Result<()> {
        let size = self.buffer.size();
        if len as u64 != size {
            return Err(Error::invalid("readback destination length", len, format!("{size} bytes, one frame")));
        }
        Ok(())
    }

    fn copy_result(&self, f: impl FnOnce(&[u8])) -> Result<()> {
        if !self.mapped.load(Ordering::SeqCst) {
            return Err(Error::Gpu("the readback holds no finished frame".into()));
        }
        {
            let view = self.buffer.get_mapped_range(..).map_err(|e| Error::Gpu(format!("readback staging: {e}")))?;
            f(&view);
        }
        self.release_result();
        Ok(())
    }

    /// Unmaps a result nobody took (a run that stopped), so the buffer can
    /// take another frame.
    pub(super) fn release_result(&self) {
        if self.mapped.swap(false, Ordering::SeqCst) {
            self.buffer.unmap();
        }
    }
}

/// Writes pieces of a frame into a slot's mapped upload buffer (which may
/// only be written, never read: it can be write-combined memory).
pub struct SlotWriter {
    pub(super) view: wgpu::BufferViewMut,
    pub(super) len: usize,
}

impl SlotWriter {
    /// Copies `data` to byte `offset` of the frame.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the piece does not fit the frame.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len()).filter(|&e| e <= self.len);
        let Some(end) = end else {
            return Err(Error::Gpu(format!(
                "{} bytes at offset {offset} do not fit a {}-byte slot",
                data.len(),
                self.len
            )));
        };
        self.view.slice(offset..end).copy_from_slice(data);
        Ok(())
    }
}

/// A buffer map's outcome, delivered by whichever thread polls the device.
pub(super) type MapRx = std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>;

/// A frame submitted to the GPU whose results are on their way back:
/// the readback (and the upload, for the slot's next frame) are being
/// mapped. Waiting needs only the device, not the [`GpuBackend`], so the
/// thread that owns the backend can hand it to a preview meanwhile.
pub struct InFlight {
    pub(super) device: wgpu::Device,
    pub(super) index: wgpu::SubmissionIndex,
    /// The buffer the result lands in (a [`Readback`], or a preview's)
    /// and its map.
    pub(super) result: (wgpu::Buffer, MapRx),
    /// The slot's upload, mapped again for its next frame.
    pub(super) upload: MapRx,
    /// The slot's timer readback and its map, where timed, and how many
    /// `[begin, end]` pairs it holds.
    pub(super) timer: Option<(wgpu::Buffer, MapRx, usize)>,
    /// A full frame's [`Readback`] flag, set once its result is mapped.
    pub(super) full: Option<Arc<AtomicBool>>,
    pub(super) period: f32,
    /// The kernel buffers' ledger bytes, held until the frame is done.
    pub(super) _holds: Vec<Arc<Reservation>>,
}

impl InFlight {
    /// Blocks until the frame is done. Afterwards a full frame's result is
    /// mapped in its [`Readback`] ([`Readback::take_result`]) and the slot's
    /// upload mapped again, for its next frame. Returns the GPU time of its kernels in ns, where timed.
    ///
    /// Device errors are not collected here: this runs without the backend
    /// lock, beside previews whose errors are theirs; a submission's own
    /// validation errors were taken when it was submitted.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the device fails or a mapping does not complete;
    /// then nothing of the frame is left mapped but what did map of the
    /// upload (the slot is unusable if that failed too).
    pub fn wait(self, slot: &GpuSlot) -> Result<Option<u64>> {
        let wait_for = wgpu::PollType::Wait { submission_index: Some(self.index.clone()), timeout: None };
        super::poll(&self.device, wait_for)?;
        let mapped = |rx: &MapRx, which: &str| -> Result<()> {
            // Another thread's poll may be delivering the callback right
            // now: wait a little, poll again, never spin.
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(20)) {
                    Ok(r) => return r.map_err(|e| Error::Gpu(format!("mapping the {which} buffer failed: {e}"))),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        super::poll(&self.device, wgpu::PollType::Poll)?;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(Error::Gpu(format!("mapping the {which} buffer never completed")));
                    }
                }
            }
        };
        let result = mapped(&self.result.1, "result");
        let upload = mapped(&self.upload, "upload");
        let ns = match (&slot.timer, self.timer.as_ref().map(|t| (mapped(&t.1, "timestamp"), t.2))) {
            (Some(t), Some((Ok(()), pairs))) => {
                let ticks: Option<u64> = t.read.get_mapped_range(..).ok().map(|view| {
                    let words: Vec<u64> =
                        view[..16 * pairs].chunks_exact(8).map(bytemuck::pod_read_unaligned).collect();
                    // Saturating: a driver's garbage must not overflow.
                    words.chunks_exact(2).fold(0u64, |sum, p| sum.saturating_add(p[1].saturating_sub(p[0])))
                });
                t.read.unmap();
                ticks.map(|t| (t as f64 * self.period as f64) as u64)
            }
            _ => None,
        };
        match (result, upload) {
            (Ok(()), Ok(())) => {
                if let Some(flag) = &self.full {
                    flag.store(true, Ordering::SeqCst);
                }
                Ok(ns)
            }
            (result, upload) => {
                if result.is_ok() {
                    self.result.0.unmap();
                }
                Err(result.err().or(upload.err()).expect("one failed"))
            }
        }
    }
}

impl Drop for InFlight {
    /// A frame dropped without [`InFlight::wait`] (its submission's errors
    /// were found after it went out, a poll failed) must not leave its
    /// result or timer buffer mapped once the map lands: the next copy into
    /// a mapped buffer is a validation error, and a preview's readback is
    /// used again and again. After a `wait` this finds nothing to do.
    ///
    /// A map still pending after a bounded wait is aborted by unmapping
    /// (the buffer goes back to idle, its callback gets an abort), so it
    /// cannot land later on a buffer that has been handed out again.
    fn drop(&mut self) {
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        let settle = |buffer: &wgpu::Buffer, rx: &MapRx| {
            let unmap = match rx.try_recv() {
                Ok(mapped) => mapped.is_ok(),
                Err(TryRecvError::Empty) => {
                    // Bounded: this may run under the backend lock, and a hung
                    // device must not hang every preview with it.
                    let done = wgpu::PollType::Wait {
                        submission_index: Some(self.index.clone()),
                        timeout: Some(std::time::Duration::from_secs(2)),
                    };
                    let _ = super::poll(&self.device, done);
                    match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                        Ok(mapped) => mapped.is_ok(),
                        // Pending (or landed just now): unmapping either
                        // aborts the map or undoes it.
                        Err(RecvTimeoutError::Timeout) => true,
                        Err(RecvTimeoutError::Disconnected) => false,
                    }
                }
                // The callback went without an answer: nothing is mapped.
                Err(TryRecvError::Disconnected) => false,
            };
            if unmap {
                // Idle afterwards whatever the map's state: a pending map
                // is aborted, a landed one undone. A success answered
                // after this (its callback was on its way) is stale: a
                // second unmap would be a validation error on an idle
                // buffer, failing whatever checks for errors next.
                buffer.unmap();
            }
        };
        settle(&self.result.0, &self.result.1);
        if let Some((buffer, rx, _)) = &self.timer {
            settle(buffer, rx);
        }
    }
}

/// Asks for `buffer` to be mapped once the GPU is done with it.
pub(super) fn request_map(buffer: &wgpu::Buffer, mode: wgpu::MapMode) -> MapRx {
    let (tx, rx) = std::sync::mpsc::channel();
    buffer.map_async(mode, .., move |r| {
        let _ = tx.send(r);
    });
    rx
}

impl GpuBackend {
    /// Ledger bytes of one frame slot: upload staging, plus its timestamp
    /// queries.
    pub fn slot_bytes(shape: FrameShape) -> u64 {
        shape.frame_bytes() + TIMER_BYTES
    }

    /// Ledger bytes of one [`Readback`].
    pub fn readback_bytes(shape: FrameShape) -> u64 {
        shape.frame_bytes()
    }

    /// A new frame slot for `shape` (see [`StagingMaker::new_slot`]).
    ///
    /// # Errors
    /// [`Error::Budget`] when the ledger refuses it, or [`Error::Gpu`].
    pub fn new_slot(&self, shape: FrameShape) -> Result<GpuSlot> {
        self.staging_maker().new_slot(shape)
    }

    /// A new [`Readback`] for frames of `shape`.
    ///
    /// # Errors
    /// [`Error::Budget`] when the ledger refuses it, or [`Error::Gpu`].
    pub fn new_readback(&self, shape: FrameShape) -> Result<Readback> {
        self.staging_maker().new_readback(shape)
    }

    /// Refuses a frame of `shape` larger than the adapter's largest buffer.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] with both sizes.
    pub fn check_frame_buffer(&self, shape: FrameShape) -> Result<()> {
        frame_fits_buffer(shape.frame_bytes(), self.max_buffer)
    }

    /// What makes slots and readback buffers, apart from the backend: an
    /// 8K slot takes 46 ms to make (wgpu zeroes its mapped memory), so an
    /// export makes its pool without holding the backend, where previews
    /// would wait behind it.
    pub fn staging_maker(&self) -> StagingMaker {
        StagingMaker {
            device: self.device.clone(),
            max_buffer: self.max_buffer,
            timestamps: self.timestamps,
            ledger: self.ledger.clone(),
        }
    }
}

/// Makes frame slots and readback buffers on a backend's device, counted by
/// its ledger, without holding the backend ([`GpuBackend::staging_maker`]).
#[derive(Clone)]
pub struct StagingMaker {
    device: wgpu::Device,
    max_buffer: u64,
    timestamps: bool,
    ledger: Arc<crate::ledger::Ledger>,
}

impl StagingMaker {
    /// The budget of the ledger it counts with.
    pub fn budget(&self) -> u64 {
        self.ledger.budget()
    }

    /// A new frame slot for `shape`, mapped and ready to be written.
    ///
    /// # Errors
    /// [`Error::Budget`] when the ledger refuses it, or [`Error::Gpu`].
    pub fn new_slot(&self, shape: FrameShape) -> Result<GpuSlot> {
        // Said before the budget's refusal: no budget makes it fit.
        self.check_size(shape.frame_bytes())?;
        let reservation = self.reserve_slot(shape)?;
        self.new_slot_in(shape, reservation)
    }

    /// A buffer of `bytes` is one the adapter can make.
    fn check_size(&self, bytes: u64) -> Result<()> {
        frame_fits_buffer(bytes, self.max_buffer)
    }

    /// The ledger's share for one slot of `shape`, taken now: a caller
    /// that decides under a lock whether a slot fits takes its memory there
    /// and makes it after ([`StagingMaker::new_slot_in`]).
    ///
    /// # Errors
    /// [`Error::Budget`] when the ledger refuses it.
    pub fn reserve_slot(&self, shape: FrameShape) -> Result<crate::ledger::Reservation> {
        self.ledger.reserve(GpuBackend::slot_bytes(shape), "one frame slot (upload staging)")
    }

    /// A new frame slot for `shape` in memory already reserved for it.
    ///
    /// # Errors
    /// [`Error::Gpu`].
    pub fn new_slot_in(&self, shape: FrameShape, reservation: crate::ledger::Reservation) -> Result<GpuSlot> {
        let bytes = shape.frame_bytes();
        self.check_size(bytes)?;
        let (upload, timer) = self.scoped(|| self.slot_buffers(bytes))?;
        Ok(GpuSlot { shape, upload, timer, _reservation: reservation })
    }

    /// A slot's upload buffer and timestamp queries.
    fn slot_buffers(&self, bytes: u64) -> (wgpu::Buffer, Option<SlotTimer>) {
        use wgpu::BufferUsages as U;
        let small = |label, usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16 * TIMED_BANDS as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        let timer = self.timestamps.then(|| SlotTimer {
            set: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("frame timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * TIMED_BANDS as u32,
            }),
            resolve: small("timer resolve", U::QUERY_RESOLVE | U::COPY_SRC),
            read: small("timer read", U::MAP_READ | U::COPY_DST),
        });
        // Mapped from birth: no map request, so no device poll, which would
        // wait for every frame on the GPU while the caller (a pool growing
        // back under the backend lock) holds a waiting preview up.
        let upload = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("upload staging"),
            size: bytes,
            usage: U::MAP_WRITE | U::COPY_SRC,
            mapped_at_creation: true,
        });
        (upload, timer)
    }

    /// A new [`Readback`] for frames of `shape`.
    ///
    /// # Errors
    /// [`Error::Budget`] when the ledger refuses it, or [`Error::Gpu`].
    pub fn new_readback(&self, shape: FrameShape) -> Result<Readback> {
        let bytes = GpuBackend::readback_bytes(shape);
        self.check_size(bytes)?;
        let reservation = self.ledger.reserve(bytes, "one readback staging buffer")?;
        let buffer = self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        Ok(Readback { shape, buffer, mapped: Arc::default(), _reservation: reservation })
    }

    /// Runs `make` inside error scopes of this thread's own: it runs
    /// beside other work on the device (a preview holding the backend), and
    /// each must get its own errors, not take the other's from the shared
    /// uncaptured-error slot.
    fn scoped<T>(&self, make: impl FnOnce() -> T) -> Result<T> {
        use wgpu::ErrorFilter as F;
        let scopes = [F::Internal, F::OutOfMemory, F::Validation].map(|f| self.device.push_error_scope(f));
        let made = make();
        // Popped innermost first; native scopes resolve at once.
        let errors: Vec<wgpu::Error> = scopes.into_iter().rev().filter_map(|s| pollster::block_on(s.pop())).collect();
        match errors.first() {
            // One line, as the uncaptured errors are.
            Some(e) => Err(Error::Gpu(crate::error::one_line(&e.to_string()))),
            None => Ok(made),
        }
    }
}

/// Refuses a frame of `bytes` larger than the adapter's largest buffer
/// (`max`): no VRAM budget makes a slot for it; the CPU backend has no
/// such limit.
///
/// # Errors
/// [`Error::InvalidValue`] with both sizes.
pub(crate) fn frame_fits_buffer(bytes: u64, max: u64) -> Result<()> {
    if bytes > max {
        let (frame, max) = crate::ledger::human_bytes_pair(bytes, max);
        return Err(Error::invalid(
            "frame size for this GPU",
            frame,
            format!("at most {max}, the adapter's largest buffer; the CPU backend has no such limit"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_past_the_adapters_largest_buffer_is_a_usage_error_with_both_sizes() {
        assert!(frame_fits_buffer(2047 << 20, 2047 << 20).is_ok());
        let e = frame_fits_buffer(2 << 30, 2047 << 20).unwrap_err();
        assert!(e.is_usage(), "exit 2: found before any frame");
        let e = e.to_string();
        // (Close sizes are told apart in bytes.)
        assert!(
            e.contains("2147483648 B")
                && e.contains("at most 2146435072 B")
                && e.contains("the CPU backend has no such limit"),
            "{e}"
        );
    }
}
