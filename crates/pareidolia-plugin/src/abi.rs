//! The C ABI between the host and a plugin: the exported descriptor, the function tables
//! and the plain `#[repr(C)]` types they pass.
//!
//! Everything here is data that crosses a `dlopen` boundary, so it follows three rules:
//! memory is owned by whoever allocated it (plugins write into host buffers or through a
//! [`ByteSink`] callback, never hand back allocations), tables only grow at their end (the
//! descriptor records the table's size, so an older host can still read a newer plugin's
//! prefix), and the descriptor starts with a magic value and the ABI version so the host can
//! check them before it calls anything.
//!
//! **Versions.** ABI 1.0 is the table up to `describe`. ABI 1.1 appends three optional
//! encoding operations (`genome_from_pixels`, `pullback`, `apply_step`); a host reads them
//! only when the descriptor's `vtable_size` reaches them ([`ENCODING_VTABLE_SIZE_1_0`] is the
//! size of a 1.0 table) and the pointer is not null, so a 1.0 plugin loads in a 1.1 host and
//! simply lacks them. A plugin built with this SDK always fills them; when its
//! [`crate::Encoding`] keeps a method's default, the call answers [`STATUS_UNSUPPORTED`].

use std::ffi::c_void;

/// First field of every descriptor: `b"PAREIDOL"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PAREIDOL");
/// Incompatible changes bump the major version; the host refuses any other major.
pub const ABI_MAJOR: u32 = 1;
/// Compatible additions (new table entries at the end) bump the minor version. 1: the optional
/// encoding operations `genome_from_pixels`, `pullback` and `apply_step`.
pub const ABI_MINOR: u32 = 1;
/// Name of the one symbol every plugin exports: `extern "C" fn() -> *const PluginDescriptor`.
pub const DESCRIPTOR_SYMBOL: &str = "pareidolia_plugin_descriptor";

/// Status code returned by every table function.
pub type Status = i32;
/// The call succeeded.
pub const STATUS_OK: Status = 0;
/// The plugin reported an error; its message went to the error sink.
pub const STATUS_ERROR: Status = 1;
/// The plugin panicked; the panic was caught and its message went to the error sink.
pub const STATUS_PANIC: Status = 2;
/// (ABI 1.1) The plugin does not implement this optional operation (its trait method kept the
/// SDK's default); a message went to the error sink. Only the optional operations return it.
pub const STATUS_UNSUPPORTED: Status = 3;

/// `kind` value of an encoding plugin.
pub const KIND_ENCODING: u32 = 1;
/// `kind` value of a fitness plugin.
pub const KIND_FITNESS: u32 = 2;

/// Output kind of a model: softmax probabilities.
pub const OUTPUT_PROBABILITIES: u32 = 0;
/// Output kind of a model: raw logits.
pub const OUTPUT_LOGITS: u32 = 1;

/// A borrowed UTF-8 string (not NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl StrRef {
    /// Borrows a string; usable in `const` and `static` items.
    pub const fn new(s: &str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

/// A borrowed byte slice.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BytesRef {
    /// First byte (may dangle when `len` is 0).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl BytesRef {
    /// Borrows a slice for the duration of one call.
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
}

/// A host-owned output stream: the plugin calls `write` (any number of times) to append
/// bytes; the host decides where they go. This is how genomes and error messages travel
/// from plugin to host without either side freeing the other's memory.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ByteSink {
    /// Opaque host context passed back to `write`.
    pub ctx: *mut c_void,
    /// Appends `len` bytes at `data` to the host's buffer.
    pub write: extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize),
}

/// The image an encoding renders: 8-bit pixels, row-major, channels interleaved
/// (`index = (y * width + x) * channels + c`); 1 channel is gray, 3 are RGB.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CanvasSpec {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (gray) or 3 (RGB).
    pub channels: u32,
}

/// What a fitness plugin is told about the models whose outputs it scores.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FitnessSpec {
    /// Classes per model output (every model of a run has the same classes).
    pub classes: u32,
    /// Number of models; `output_kinds` has this many entries.
    pub models: u32,
    /// Per model: [`OUTPUT_PROBABILITIES`] or [`OUTPUT_LOGITS`].
    pub output_kinds: *const u32,
}

/// The function table of an encoding plugin. Instances are opaque pointers made by `create`
/// and released by `destroy`; every other function may be called from several threads at
/// once on the same instance.
#[repr(C)]
pub struct EncodingVTable {
    /// Builds an instance from JSON parameters for one canvas.
    pub create: unsafe extern "C" fn(
        params: StrRef,
        canvas: CanvasSpec,
        instance: *mut *mut c_void,
        err: ByteSink,
    ) -> Status,
    /// Releases an instance made by `create`.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Writes a new random genome, drawn from an RNG seeded with `seed`.
    pub random: unsafe extern "C" fn(
        instance: *mut c_void,
        seed: u64,
        out: ByteSink,
        err: ByteSink,
    ) -> Status,
    /// Writes a mutated copy of `genome`; `generation` drives schedules, `seed` the RNG.
    pub mutate: unsafe extern "C" fn(
        instance: *mut c_void,
        genome: BytesRef,
        generation: u64,
        seed: u64,
        out: ByteSink,
        err: ByteSink,
    ) -> Status,
    /// Writes two children of `a` and `b` (copies when the encoding has no crossover).
    pub crossover: unsafe extern "C" fn(
        instance: *mut c_void,
        a: BytesRef,
        b: BytesRef,
        seed: u64,
        out_a: ByteSink,
        out_b: ByteSink,
        err: ByteSink,
    ) -> Status,
    /// Renders `genome` into the host's buffer of exactly `width * height * channels` bytes.
    pub render: unsafe extern "C" fn(
        instance: *mut c_void,
        genome: BytesRef,
        pixels: *mut u8,
        pixels_len: usize,
        err: ByteSink,
    ) -> Status,
    /// Writes a JSON description of `genome`, for inspection and export.
    pub describe: unsafe extern "C" fn(
        instance: *mut c_void,
        genome: BytesRef,
        out: ByteSink,
        err: ByteSink,
    ) -> Status,
    // ABI 1.1 from here on. A host reads these fields only when `vtable_size` covers them
    // (see ENCODING_VTABLE_SIZE_1_0); `None` (null) means the operation is absent.
    /// (ABI 1.1, optional) Writes the genome whose render is the image `pixels`:
    /// `pixels_len == width * height * channels` real values in canvas units (`0.0..=255.0`,
    /// the render layout), which the encoding may clamp or quantise as its format needs.
    pub genome_from_pixels: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            pixels: *const f32,
            pixels_len: usize,
            out: ByteSink,
            err: ByteSink,
        ) -> Status,
    >,
    /// (ABI 1.1, optional) The vector-Jacobian product of `render` at `genome`: given
    /// `gradient` = dL/dpixel (`gradient_len == width * height * channels`, render layout, per
    /// canvas unit), writes dL/dθ for the genome's parameter vector θ (the one `apply_step`
    /// moves) as `f32` values in native byte order, 4 bytes each, through `out`.
    pub pullback: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            genome: BytesRef,
            gradient: *const f32,
            gradient_len: usize,
            out: ByteSink,
            err: ByteSink,
        ) -> Status,
    >,
    /// (ABI 1.1, optional) Writes the genome with parameters θ + `step` (`step_len` equal to
    /// the length `pullback` gives for this genome), kept in the encoding's value ranges.
    pub apply_step: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            genome: BytesRef,
            step: *const f32,
            step_len: usize,
            out: ByteSink,
            err: ByteSink,
        ) -> Status,
    >,
}

/// `vtable_size` of an ABI 1.0 encoding table: everything up to and including `describe`.
pub const ENCODING_VTABLE_SIZE_1_0: usize =
    std::mem::offset_of!(EncodingVTable, genome_from_pixels);

/// The function table of a fitness plugin.
#[repr(C)]
pub struct FitnessVTable {
    /// Builds an instance from JSON parameters for the run's models.
    pub create: unsafe extern "C" fn(
        params: StrRef,
        spec: FitnessSpec,
        instance: *mut *mut c_void,
        err: ByteSink,
    ) -> Status,
    /// Releases an instance made by `create`.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Scores a batch. `outputs` holds `models * batch * classes` values (model-major, then
    /// image, then class); `scores` receives `batch * classes` values, one per image and class.
    pub score: unsafe extern "C" fn(
        instance: *mut c_void,
        outputs: *const f32,
        outputs_len: usize,
        batch: usize,
        scores: *mut f32,
        scores_len: usize,
        err: ByteSink,
    ) -> Status,
}

/// What [`DESCRIPTOR_SYMBOL`] returns. Its layout up to `abi_minor` never changes.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDescriptor {
    /// Always [`MAGIC`].
    pub magic: u64,
    /// The [`ABI_MAJOR`] the plugin was built against.
    pub abi_major: u32,
    /// The [`ABI_MINOR`] the plugin was built against.
    pub abi_minor: u32,
    /// [`KIND_ENCODING`] or [`KIND_FITNESS`].
    pub kind: u32,
    /// The plugin's name, as configs refer to it.
    pub name: StrRef,
    /// The plugin's own version (semver).
    pub version: StrRef,
    /// Points at an [`EncodingVTable`] or a [`FitnessVTable`], according to `kind`.
    pub vtable: *const c_void,
    /// `size_of` the table the plugin was built with; tables only grow at the end.
    pub vtable_size: usize,
}

// SAFETY: a descriptor is immutable static data (pointers to static strings and a static
// table of function pointers), so sharing it between threads is sound.
unsafe impl Sync for PluginDescriptor {}

impl PluginDescriptor {
    /// The descriptor of an encoding plugin; used by [`crate::export_encoding!`].
    pub const fn encoding(
        name: &'static str,
        version: &'static str,
        vtable: &'static EncodingVTable,
    ) -> Self {
        Self {
            magic: MAGIC,
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            kind: KIND_ENCODING,
            name: StrRef::new(name),
            version: StrRef::new(version),
            vtable: vtable as *const EncodingVTable as *const c_void,
            vtable_size: std::mem::size_of::<EncodingVTable>(),
        }
    }

    /// The descriptor of a fitness plugin; used by [`crate::export_fitness!`].
    pub const fn fitness(
        name: &'static str,
        version: &'static str,
        vtable: &'static FitnessVTable,
    ) -> Self {
        Self {
            magic: MAGIC,
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            kind: KIND_FITNESS,
            name: StrRef::new(name),
            version: StrRef::new(version),
            vtable: vtable as *const FitnessVTable as *const c_void,
            vtable_size: std::mem::size_of::<FitnessVTable>(),
        }
    }
}
