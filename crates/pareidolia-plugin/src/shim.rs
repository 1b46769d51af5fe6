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
    STATUS_ERROR, STATUS_OK, STATUS_PANIC, STATUS_UNSUPPORTED, Status, StrRef,
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
        genome_from_pixels: Some(encoding_genome_from_pixels::<E>),
        pullback: Some(encoding_pullback::<E>),
        apply_step: Some(encoding_apply_step::<E>),
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
            if e.is_unsupported() {
                STATUS_UNSUPPORTED
            } else {
                STATUS_ERROR
            }
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

/// # Safety
/// `ptr` must point at `len` readable `f32`s that stay valid for `'a` (or `len` be 0).
unsafe fn floats_arg<'a>(
    ptr: *const f32,
    len: usize,
    what: &str,
    canvas: Canvas,
) -> Result<&'a [f32], PluginError> {
    if len != canvas.len() || (ptr.is_null() && len > 0) {
        return Err(PluginError::new(format!(
            "{what} holds {len} values, the canvas {}x{}x{} needs {}",
            canvas.width,
            canvas.height,
            canvas.channels,
            canvas.len()
        )));
    }
    // SAFETY: per the contract above, checked non-null.
    let values = unsafe { std::slice::from_raw_parts(ptr, len) };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(PluginError::new(format!(
            "{what} value {i} is {}, not a finite number",
            values[i]
        )));
    }
    Ok(values)
}

/// Writes `values` as native-endian `f32` bytes.
fn write_floats(sink: ByteSink, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    write(sink, &bytes);
}

unsafe extern "C" fn encoding_genome_from_pixels<E: Encoding>(
    inst: *mut c_void,
    pixels: *const f32,
    pixels_len: usize,
    out: ByteSink,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance of this plugin.
        let inst = unsafe { instance::<EncodingInstance<E>>(inst) };
        // SAFETY: the host owns `pixels_len` readable values at `pixels` for the whole call.
        let pixels = unsafe { floats_arg(pixels, pixels_len, "the image", inst.canvas) }?;
        let genome = inst.encoding.genome_from_pixels(pixels)?;
        write(out, &inst.encoding.encode(&genome));
        Ok(())
    })
}

unsafe extern "C" fn encoding_pullback<E: Encoding>(
    inst: *mut c_void,
    genome: BytesRef,
    gradient: *const f32,
    gradient_len: usize,
    out: ByteSink,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance and a genome it owns during the call.
        let (inst, bytes) = unsafe { (instance::<EncodingInstance<E>>(inst), bytes_arg(genome)) };
        // SAFETY: the host owns `gradient_len` readable values at `gradient` for the call.
        let gradient =
            unsafe { floats_arg(gradient, gradient_len, "the pixel gradient", inst.canvas) }?;
        let genome = inst.encoding.decode(bytes)?;
        let pulled = inst.encoding.pullback(&genome, gradient)?;
        write_floats(out, &pulled);
        Ok(())
    })
}

unsafe extern "C" fn encoding_apply_step<E: Encoding>(
    inst: *mut c_void,
    genome: BytesRef,
    step: *const f32,
    step_len: usize,
    out: ByteSink,
    err: ByteSink,
) -> Status {
    guarded(err, || {
        // SAFETY: the host passes a live instance and a genome it owns during the call.
        let (inst, bytes) = unsafe { (instance::<EncodingInstance<E>>(inst), bytes_arg(genome)) };
        let step = if step_len == 0 {
            &[][..]
        } else if step.is_null() {
            return Err(PluginError::new("the step is a null pointer"));
        } else {
            // SAFETY: the host owns `step_len` readable values at `step` for the whole call.
            unsafe { std::slice::from_raw_parts(step, step_len) }
        };
        if let Some(i) = step.iter().position(|v| !v.is_finite()) {
            return Err(PluginError::new(format!(
                "step value {i} is {}, not a finite number",
                step[i]
            )));
        }
        let genome = inst.encoding.decode(bytes)?;
        let moved = inst.encoding.apply_step(&genome, step)?;
        write(out, &inst.encoding.encode(&moved));
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

#[cfg(test)]
mod tests {
    //! The ABI 1.1 shims driven through the function table, as a host calls them.

    use super::*;
    use crate::abi::{ENCODING_VTABLE_SIZE_1_0, PluginDescriptor};

    /// A gray encoding whose genome is the image divided by 255, offering the ABI 1.1
    /// operations; `pullback` panics on a genome whose first value is exactly 0.25.
    struct Scaled;

    impl Encoding for Scaled {
        type Genome = Vec<f32>;
        fn new(_: Params<'_>, _: Canvas) -> Result<Self, PluginError> {
            Ok(Scaled)
        }
        fn random(&self, _: &mut Rng) -> Vec<f32> {
            vec![0.5; 4]
        }
        fn mutate(&self, _: &mut Vec<f32>, _: Mutation, _: &mut Rng) {}
        fn render(&self, g: &Vec<f32>, pixels: &mut [u8]) -> Result<(), PluginError> {
            for (p, v) in pixels.iter_mut().zip(g) {
                *p = (v * 255.0) as u8;
            }
            Ok(())
        }
        fn encode(&self, g: &Vec<f32>) -> Vec<u8> {
            g.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        fn decode(&self, b: &[u8]) -> Result<Vec<f32>, PluginError> {
            Ok(b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        fn genome_from_pixels(&self, pixels: &[f32]) -> Result<Vec<f32>, PluginError> {
            Ok(pixels.iter().map(|p| p / 255.0).collect())
        }
        fn pullback(&self, g: &Vec<f32>, grad: &[f32]) -> Result<Vec<f32>, PluginError> {
            assert!(g[0] != 0.25, "pullback exploded");
            Ok(grad.iter().map(|d| d * 255.0).collect())
        }
        fn apply_step(&self, g: &Vec<f32>, step: &[f32]) -> Result<Vec<f32>, PluginError> {
            if step.len() != g.len() {
                return Err(PluginError::new("wrong step length"));
            }
            Ok(g.iter().zip(step).map(|(a, b)| a + b).collect())
        }
    }

    /// The same encoding keeping the SDK's defaults for the optional operations.
    struct Plain;

    impl Encoding for Plain {
        type Genome = Vec<f32>;
        fn new(_: Params<'_>, _: Canvas) -> Result<Self, PluginError> {
            Ok(Plain)
        }
        fn random(&self, rng: &mut Rng) -> Vec<f32> {
            Scaled.random(rng)
        }
        fn mutate(&self, _: &mut Vec<f32>, _: Mutation, _: &mut Rng) {}
        fn render(&self, g: &Vec<f32>, pixels: &mut [u8]) -> Result<(), PluginError> {
            Scaled.render(g, pixels)
        }
        fn encode(&self, g: &Vec<f32>) -> Vec<u8> {
            Scaled.encode(g)
        }
        fn decode(&self, b: &[u8]) -> Result<Vec<f32>, PluginError> {
            Scaled.decode(b)
        }
    }

    extern "C" fn collect(ctx: *mut c_void, data: *const u8, len: usize) {
        // SAFETY: `ctx` is the Vec lent by `sink` for one call; `data` has `len` bytes.
        unsafe {
            (*(ctx as *mut Vec<u8>)).extend_from_slice(std::slice::from_raw_parts(data, len))
        };
    }

    fn sink(buf: &mut Vec<u8>) -> ByteSink {
        ByteSink {
            ctx: buf as *mut Vec<u8> as *mut c_void,
            write: collect,
        }
    }

    const CANVAS: CanvasSpec = CanvasSpec {
        width: 2,
        height: 2,
        channels: 1,
    };

    fn create(table: &EncodingVTable) -> *mut c_void {
        let mut inst = std::ptr::null_mut();
        let mut err = Vec::new();
        // SAFETY: the parameter text and out-pointer live through the call.
        let status =
            unsafe { (table.create)(StrRef::new("{}"), CANVAS, &mut inst, sink(&mut err)) };
        assert_eq!(status, STATUS_OK);
        inst
    }

    fn from_pixels(
        table: &EncodingVTable,
        inst: *mut c_void,
        px: &[f32],
    ) -> (Status, Vec<u8>, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // SAFETY: live instance; buffers live through the call.
        let status = unsafe {
            (table.genome_from_pixels.unwrap())(
                inst,
                px.as_ptr(),
                px.len(),
                sink(&mut out),
                sink(&mut err),
            )
        };
        (status, out, String::from_utf8(err).unwrap())
    }

    fn pullback(
        table: &EncodingVTable,
        inst: *mut c_void,
        genome: &[u8],
        grad: &[f32],
    ) -> (Status, Vec<f32>, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // SAFETY: live instance; buffers live through the call.
        let status = unsafe {
            (table.pullback.unwrap())(
                inst,
                BytesRef::new(genome),
                grad.as_ptr(),
                grad.len(),
                sink(&mut out),
                sink(&mut err),
            )
        };
        let values = out
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (status, values, String::from_utf8(err).unwrap())
    }

    fn step(
        table: &EncodingVTable,
        inst: *mut c_void,
        genome: &[u8],
        step: &[f32],
    ) -> (Status, Vec<u8>, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // SAFETY: live instance; buffers live through the call.
        let status = unsafe {
            (table.apply_step.unwrap())(
                inst,
                BytesRef::new(genome),
                step.as_ptr(),
                step.len(),
                sink(&mut out),
                sink(&mut err),
            )
        };
        (status, out, String::from_utf8(err).unwrap())
    }

    #[test]
    fn the_optional_operations_cross_the_table() {
        let table = encoding_vtable::<Scaled>();
        let inst = create(&table);
        let (status, genome, _) = from_pixels(&table, inst, &[0.0, 51.0, 127.5, 255.0]);
        assert_eq!(status, STATUS_OK);
        assert_eq!(Scaled.decode(&genome).unwrap(), [0.0, 0.2, 0.5, 1.0]);
        let (status, grad, _) = pullback(&table, inst, &genome, &[1.0, -2.0, 0.0, 0.5]);
        assert_eq!(status, STATUS_OK);
        assert_eq!(grad, [255.0, -510.0, 0.0, 127.5]);
        let (status, moved, _) = step(&table, inst, &genome, &[0.5, 0.0, 0.0, -0.5]);
        assert_eq!(status, STATUS_OK);
        assert_eq!(Scaled.decode(&moved).unwrap(), [0.5, 0.2, 0.5, 0.5]);
        // SAFETY: made by `create`, destroyed once.
        unsafe { (table.destroy)(inst) };
    }

    #[test]
    fn bad_inputs_errors_and_panics_come_back_as_statuses() {
        let table = encoding_vtable::<Scaled>();
        let inst = create(&table);
        let (status, out, err) = from_pixels(&table, inst, &[0.0; 3]);
        assert_eq!((status, out.len()), (STATUS_ERROR, 0));
        assert!(
            err.contains("holds 3 values") && err.contains("needs 4"),
            "{err}"
        );
        let (status, _, err) = from_pixels(&table, inst, &[0.0, f32::NAN, 0.0, 0.0]);
        assert_eq!(status, STATUS_ERROR);
        assert!(err.contains("value 1 is NaN"), "{err}");
        let genome = Scaled.encode(&vec![0.5; 4]);
        let (status, _, err) = pullback(&table, inst, &genome, &[0.0; 5]);
        assert_eq!(status, STATUS_ERROR, "{err}");
        let (status, _, err) = step(&table, inst, &genome, &[0.0, f32::INFINITY, 0.0, 0.0]);
        assert_eq!(status, STATUS_ERROR);
        assert!(err.contains("value 1 is inf"), "{err}");
        let (status, _, err) = step(&table, inst, &genome, &[0.0; 2]);
        assert_eq!((status, err.as_str()), (STATUS_ERROR, "wrong step length"));
        let exploding = Scaled.encode(&vec![0.25; 4]);
        let (status, _, err) = pullback(&table, inst, &exploding, &[0.0; 4]);
        assert_eq!(status, STATUS_PANIC);
        assert!(err.contains("pullback exploded"), "{err}");
        // SAFETY: made by `create`, destroyed once.
        unsafe { (table.destroy)(inst) };
    }

    #[test]
    fn the_defaults_answer_unsupported_with_the_method_name() {
        let table = encoding_vtable::<Plain>();
        let inst = create(&table);
        let genome = Plain.encode(&vec![0.5; 4]);
        let (status, out, err) = from_pixels(&table, inst, &[0.0; 4]);
        assert_eq!((status, out.len()), (STATUS_UNSUPPORTED, 0));
        assert!(err.contains("Encoding::genome_from_pixels"), "{err}");
        let (status, _, err) = pullback(&table, inst, &genome, &[0.0; 4]);
        assert_eq!(status, STATUS_UNSUPPORTED);
        assert!(err.contains("Encoding::pullback"), "{err}");
        let (status, _, err) = step(&table, inst, &genome, &[0.0; 4]);
        assert_eq!(status, STATUS_UNSUPPORTED);
        assert!(err.contains("Encoding::apply_step"), "{err}");
        // SAFETY: made by `create`, destroyed once.
        unsafe { (table.destroy)(inst) };
    }

    #[test]
    fn the_table_grows_at_its_end_and_the_descriptor_says_so() {
        static TABLE: EncodingVTable = encoding_vtable::<Plain>();
        let d = PluginDescriptor::encoding("plain", "0", &TABLE);
        assert_eq!((d.abi_major, d.abi_minor), (1, 1));
        let word = std::mem::size_of::<usize>();
        // Seven function pointers in ABI 1.0, three optional ones (null-able, no wider) in 1.1.
        assert_eq!(ENCODING_VTABLE_SIZE_1_0, 7 * word);
        assert_eq!(d.vtable_size, 10 * word);
        assert_eq!(std::mem::offset_of!(EncodingVTable, describe), 6 * word);
    }
}
