//! The `extern "C"` side of the export macros: generic shims that turn the safe traits into
//! function tables. Every shim runs the plugin's code inside `catch_unwind`, because a panic
//! that reaches an `extern "C"` frame aborts the whole host (and `C-unwind` does not help
//! between two Rust binaries with their own standard libraries). Not part of the public API.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::SeedableRng;

use crate::abi::{
    ByteSink, BytesRef, CanvasSpec, EncodingVTable, FitnessSpec, FitnessVTable, OUTPUT_LOGITS,
    STATUS_ERROR, STATUS_OK, STATUS_PANIC, Status, StrRef,
};
use crate::{
    Canvas, Encoding, Fitness, ModelOutputs, Mutation, OutputKind, Params, PluginError, Rng,
};

/// The table for encoding `E`; evaluated at compile time by [`crate::export_encoding!`].
pub const fn encoding_vtable<E: Encoding>() -> EncodingVTable {
    EncodingVTable {
        create: encoding_create::<E>,
        destroy: destroy::<EncodingInstance<E>>,
        random: encoding_random::<E>,
        mutate: encoding_mutate::<E>,
        crossover: encoding_crossover::<E>,
        render: encoding_render::<E>,
        describe: encoding_describe::<E>,
    }
}

/// The table for fitness `F`; evaluated at compile time by [`crate::export_fitness!`].
pub const fn fitness_vtable<F: Fitness>() -> FitnessVTable {
    FitnessVTable {
        create: fitness_create::<F>,
        destroy: destroy::<F>,
        score: fitness_score::<F>,
    }
}

struct EncodingInstance<E> {
    encoding: E,
    canvas: Canvas,
}

fn write(sink: ByteSink, bytes: &[u8]) {
    (sink.write)(sink.ctx, bytes.as_ptr(), bytes.len());
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, reporting an error or a caught panic through `err`.
fn guarded(err: ByteSink, f: impl FnOnce() -> Result<(), PluginError>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(e)) => {
            write(err, e.message().as_bytes());
            STATUS_ERROR
        }
        Err(payload) => {
            write(
                err,
                format!("plugin panicked: {}", panic_message(&*payload)).as_bytes(),
            );
            STATUS_PANIC
        }
    }
}

/// # Safety
/// `s` must describe `len` readable bytes that stay valid for `'a`.
unsafe fn str_arg<'a>(s: StrRef) -> Result<&'a str, PluginError> {
    let bytes = if s.len == 0 {
        &[][..]
    } else {
        // SAFETY: the host passes a pointer/length pair it owns for the whole call.
        unsafe { std::slice::from_raw_parts(s.ptr, s.len) }
    };
    std::str::from_utf8(bytes).map_err(|_| PluginError::new("parameters are not valid UTF-8"))
}

/// # Safety
/// `b` must describe `len` readable bytes that stay valid for `'a`.
unsafe fn bytes_arg<'a>(b: BytesRef) -> &'a [u8] {
    if b.len == 0 {
        &[]
    } else {
        // SAFETY: the host passes a pointer/length pair it owns for the whole call.
        unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
    }
}

/// # Safety
/// `instance` must come from the matching `create` and not yet be destroyed.
unsafe fn instance<'a, T>(instance: *mut c_void) -> &'a T {
    // SAFETY: per the contract above, `instance` is a live `Box<T>` made by `create`.
    unsafe { &*(instance as *const T) }
}

unsafe extern "C" fn destroy<T>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host destroys each instance made by `create` exactly once.
        drop(unsafe { Box::from_raw(instance as *mut T) });
    }));
}

unsafe extern "C" fn encoding_create<E: Encoding>(
    params: StrRef,
    canvas: CanvasSpec,
    out: *mut *mut c_void,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host keeps the parameter text alive during the call.
        let json = unsafe { str_arg(params) }?;
        let canvas = Canvas {
            width: canvas.width,
            height: canvas.height,
            channels: canvas.channels,
        };
        let encoding = E::new(Params::new(json), canvas)?;
        let boxed = Box::new(EncodingInstance { encoding, canvas });
        // SAFETY: `out` is a valid place for the host to receive the instance pointer.
        unsafe { *out = Box::into_raw(boxed) as *mut c_void };
        Ok(())
    })
}

unsafe extern "C" fn encoding_random<E: Encoding>(
    inst: *mut c_void,
    seed: u64,
    out: ByteSink,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance of this plugin.
        let inst = unsafe { instance::<EncodingInstance<E>>(inst) };
        let mut rng = Rng::seed_from_u64(seed);
        let genome = inst.encoding.random(&mut rng);
        write(out, &inst.encoding.encode(&genome));
        Ok(())
    })
}

unsafe extern "C" fn encoding_mutate<E: Encoding>(
    inst: *mut c_void,
    genome: BytesRef,
    generation: u64,
    seed: u64,
    out: ByteSink,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance and a genome it owns during the call.
        let (inst, bytes) = unsafe { (instance::<EncodingInstance<E>>(inst), bytes_arg(genome)) };
        let mut genome = inst.encoding.decode(bytes)?;
        let mut rng = Rng::seed_from_u64(seed);
        inst.encoding
            .mutate(&mut genome, Mutation { generation }, &mut rng);
        write(out, &inst.encoding.encode(&genome));
        Ok(())
    })
}

unsafe extern "C" fn encoding_crossover<E: Encoding>(
    inst: *mut c_void,
    a: BytesRef,
    b: BytesRef,
    seed: u64,
    out_a: ByteSink,
    out_b: ByteSink,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance and genomes it owns during the call.
        let (inst, a, b) = unsafe {
            (
                instance::<EncodingInstance<E>>(inst),
                bytes_arg(a),
                bytes_arg(b),
            )
        };
        let (ga, gb) = (inst.encoding.decode(a)?, inst.encoding.decode(b)?);
        let mut rng = Rng::seed_from_u64(seed);
        let (ca, cb) = inst.encoding.crossover(&ga, &gb, &mut rng);
        write(out_a, &inst.encoding.encode(&ca));
        write(out_b, &inst.encoding.encode(&cb));
        Ok(())
    })
}

unsafe extern "C" fn encoding_render<E: Encoding>(
    inst: *mut c_void,
    genome: BytesRef,
    pixels: *mut u8,
    pixels_len: usize,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance and a genome it owns during the call.
        let (inst, bytes) = unsafe { (instance::<EncodingInstance<E>>(inst), bytes_arg(genome)) };
        if pixels_len != inst.canvas.len() || pixels.is_null() {
            return Err(PluginError::new(format!(
                "render buffer holds {pixels_len} bytes, the canvas {}x{}x{} needs {}",
                inst.canvas.width,
                inst.canvas.height,
                inst.canvas.channels,
                inst.canvas.len()
            )));
        }
        let genome = inst.encoding.decode(bytes)?;
        // SAFETY: the host owns `pixels_len` writable bytes at `pixels` for the whole call.
        let out = unsafe { std::slice::from_raw_parts_mut(pixels, pixels_len) };
        inst.encoding.render(&genome, out)
    })
}

unsafe extern "C" fn encoding_describe<E: Encoding>(
    inst: *mut c_void,
    genome: BytesRef,
    out: ByteSink,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance and a genome it owns during the call.
        let (inst, bytes) = unsafe { (instance::<EncodingInstance<E>>(inst), bytes_arg(genome)) };
        let genome = inst.encoding.decode(bytes)?;
        write(out, inst.encoding.describe(&genome).as_bytes());
        Ok(())
    })
}

unsafe extern "C" fn fitness_create<F: Fitness>(
    params: StrRef,
    spec: FitnessSpec,
    out: *mut *mut c_void,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host keeps the parameter text alive during the call.
        let json = unsafe { str_arg(params) }?;
        let kinds: Vec<OutputKind> = if spec.models == 0 {
            Vec::new()
        } else {
            // SAFETY: the host passes `models` readable kinds.
            unsafe { std::slice::from_raw_parts(spec.output_kinds, spec.models as usize) }
                .iter()
                .map(|&k| {
                    if k == OUTPUT_LOGITS {
                        OutputKind::Logits
                    } else {
                        OutputKind::Probabilities
                    }
                })
                .collect()
        };
        let fitness = F::new(Params::new(json), spec.classes as usize, &kinds)?;
        let boxed = Box::new(FitnessInstance {
            fitness,
            classes: spec.classes as usize,
            kinds,
        });
        // SAFETY: `out` is a valid place for the host to receive the instance pointer.
        unsafe { *out = Box::into_raw(boxed) as *mut c_void };
        Ok(())
    })
}

struct FitnessInstance<F> {
    fitness: F,
    classes: usize,
    kinds: Vec<OutputKind>,
}

unsafe extern "C" fn fitness_score<F: Fitness>(
    inst: *mut c_void,
    outputs: *const f32,
    outputs_len: usize,
    batch: usize,
    scores: *mut f32,
    scores_len: usize,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance of this plugin.
        let inst = unsafe { instance::<FitnessInstance<F>>(inst) };
        let expected_in = inst.kinds.len() * batch * inst.classes;
        if outputs_len != expected_in || scores_len != batch * inst.classes {
            return Err(PluginError::new(format!(
                "score buffers hold {outputs_len} outputs and {scores_len} scores; \
                 {} models x {batch} images x {} classes need {expected_in} and {}",
                inst.kinds.len(),
                inst.classes,
                batch * inst.classes
            )));
        }
        // SAFETY: the host owns both buffers, of the lengths checked above, for the call.
        let (data, out) = unsafe {
            (
                std::slice::from_raw_parts(outputs, outputs_len),
                std::slice::from_raw_parts_mut(scores, scores_len),
            )
        };
        let outputs = ModelOutputs {
            data,
            batch,
            classes: inst.classes,
            kinds: &inst.kinds,
        };
        inst.fitness.score(&outputs, out)
    })
}
