//! A live instance of an encoding plugin, callable from several threads, with the optional
//! ABI 1.1 operations (`genome_from_pixels`, `pullback`, `apply_step`) behind
//! [`EncodingPlugin::offers`] and an [`OptionalCallError`] that says which plugin lacks what.
//!
//! The function table is read field by field through a raw pointer, never as a whole
//! `&EncodingVTable`: a 1.0 plugin's table is shorter than this host's type, and only the
//! fields its `vtable_size` covers exist.

use std::ffi::c_void;
use std::fmt;
use std::mem::{offset_of, size_of};
use std::sync::Arc;

use pareidolia_plugin::abi::{
    BytesRef, CanvasSpec, EncodingVTable, STATUS_OK, STATUS_PANIC, STATUS_UNSUPPORTED, Status,
    StrRef,
};

use super::sink::VecSink;
use super::{PluginCallError, PluginError, PluginKind, PluginLibrary};

/// An optional encoding operation of plugin ABI 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionalOperation {
    /// A genome whose render is given pixels (`Encoding::genome_from_pixels`).
    GenomeFromPixels,
    /// The vector-Jacobian product of `render` (`Encoding::pullback`).
    Pullback,
    /// A step in the genome's parameter space (`Encoding::apply_step`).
    ApplyStep,
}

impl OptionalOperation {
    /// Every optional operation, in table order.
    pub const ALL: [OptionalOperation; 3] = [
        OptionalOperation::GenomeFromPixels,
        OptionalOperation::Pullback,
        OptionalOperation::ApplyStep,
    ];

    /// The table field's name, as `Encoding`'s method is called.
    pub fn name(self) -> &'static str {
        match self {
            OptionalOperation::GenomeFromPixels => "genome_from_pixels",
            OptionalOperation::Pullback => "pullback",
            OptionalOperation::ApplyStep => "apply_step",
        }
    }

    /// What it does, for messages.
    fn purpose(self) -> &'static str {
        match self {
            OptionalOperation::GenomeFromPixels => "a genome from pixels",
            OptionalOperation::Pullback => "the pull-back of a pixel gradient to the genome",
            OptionalOperation::ApplyStep => "a gradient step on the genome",
        }
    }

    /// Byte offset of the field in the table, and the size it needs.
    fn extent(self) -> usize {
        let offset = match self {
            OptionalOperation::GenomeFromPixels => offset_of!(EncodingVTable, genome_from_pixels),
            OptionalOperation::Pullback => offset_of!(EncodingVTable, pullback),
            OptionalOperation::ApplyStep => offset_of!(EncodingVTable, apply_step),
        };
        // Every optional field is an `Option` of a function pointer: one pointer wide.
        offset + size_of::<usize>()
    }
}

impl fmt::Display for OptionalOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An optional operation could not be done: the plugin does not offer it (built before ABI
/// 1.1, or it keeps the SDK's default for it, or not for these parameters), or the call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OptionalCallError {
    /// The plugin lacks the operation; nothing was computed.
    #[error(
        "encoding plugin `{plugin}` ({path}, plugin ABI {abi}) does not offer `{operation}` ({}): {reason}",
        operation.purpose()
    )]
    NotOffered {
        /// The plugin's name.
        plugin: String,
        /// Its library file, for display.
        path: String,
        /// The ABI it was built against, `major.minor`.
        abi: String,
        /// What it lacks.
        operation: OptionalOperation,
        /// Why, and what to do.
        reason: String,
    },
    /// The plugin has the operation, but this call failed (error or caught panic).
    #[error(transparent)]
    Failed(#[from] PluginCallError),
}

impl OptionalCallError {
    /// Whether the plugin lacks the operation (as opposed to one call failing).
    pub fn is_not_offered(&self) -> bool {
        matches!(self, OptionalCallError::NotOffered { .. })
    }
}

/// An encoding plugin instance for one canvas. Dropping it destroys the instance.
#[derive(Debug)]
pub struct EncodingPlugin {
    library: Arc<PluginLibrary>,
    instance: *mut c_void,
    canvas: CanvasSpec,
}

// SAFETY: the SDK requires `Encoding: Send + Sync`, so the instance may be used and dropped
// from any thread; the library outlives it through the `Arc`.
unsafe impl Send for EncodingPlugin {}
// SAFETY: as above.
unsafe impl Sync for EncodingPlugin {}

impl EncodingPlugin {
    /// Creates an instance with JSON parameters for a canvas.
    pub fn create(
        library: Arc<PluginLibrary>,
        params_json: &str,
        canvas: CanvasSpec,
    ) -> Result<Self, PluginError> {
        library.expect_kind(PluginKind::Encoding)?;
        let mut err = VecSink::default();
        let mut instance: *mut c_void = std::ptr::null_mut();
        let vtable = library.vtable() as *const EncodingVTable;
        // SAFETY: the kind was checked, so the table starts as an `EncodingVTable` of at least
        // ABI 1.0 (`create` is one of its fields); the parameter text and the out-pointer live
        // through the call.
        let status = unsafe {
            ((*vtable).create)(
                StrRef::new(params_json),
                canvas,
                &mut instance,
                err.as_sink(),
            )
        };
        if status != STATUS_OK || instance.is_null() {
            return Err(PluginError::Create {
                name: library.info().name.clone(),
                message: err.text(),
            });
        }
        Ok(Self {
            library,
            instance,
            canvas,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.library.info().name
    }

    /// The library's descriptor.
    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.library
    }

    /// The canvas it renders.
    pub fn canvas(&self) -> CanvasSpec {
        self.canvas
    }

    /// Bytes of one rendered image.
    pub fn image_len(&self) -> usize {
        (self.canvas.width * self.canvas.height * self.canvas.channels) as usize
    }

    /// The table. Read its fields with `(*table).field` only: the ABI 1.0 ones always exist
    /// (checked at load), the others through [`Self::optional`].
    fn table(&self) -> *const EncodingVTable {
        self.library.vtable() as *const EncodingVTable
    }

    /// Whether the plugin's table has `operation`: built against ABI 1.1 or later with the
    /// entry filled. A plugin may still answer that it does not implement it (see
    /// [`OptionalCallError::NotOffered`]); [`Self::check_offers`] asks it.
    pub fn offers(&self, operation: OptionalOperation) -> bool {
        if self.library.vtable_size() < operation.extent() {
            return false;
        }
        let t = self.table();
        // SAFETY: `vtable_size` covers the field, so it is part of the plugin's static table;
        // it is read by value, without a reference to the whole table.
        unsafe {
            match operation {
                OptionalOperation::GenomeFromPixels => (*t).genome_from_pixels.is_some(),
                OptionalOperation::Pullback => (*t).pullback.is_some(),
                OptionalOperation::ApplyStep => (*t).apply_step.is_some(),
            }
        }
    }

    fn not_offered(&self, operation: OptionalOperation, reason: String) -> OptionalCallError {
        let info = self.library.info();
        OptionalCallError::NotOffered {
            plugin: info.name.clone(),
            path: info.path.display().to_string(),
            abi: info.abi.clone(),
            operation,
            reason,
        }
    }

    /// The entry of `operation` as `read` takes it from the table, or why it is absent.
    /// `read` may dereference the table pointer for this operation's field: it runs only when
    /// `vtable_size` covers that field.
    fn optional<T>(
        &self,
        operation: OptionalOperation,
        read: impl FnOnce(*const EncodingVTable) -> Option<T>,
    ) -> Result<T, OptionalCallError> {
        if self.library.vtable_size() < operation.extent() {
            return Err(self.not_offered(
                operation,
                format!(
                    "it was built against plugin ABI {}, before this optional entry point (ABI 1.1); \
                     rebuild it against pareidolia-plugin 0.2 or later and implement `Encoding::{}`",
                    self.library.info().abi,
                    operation.name()
                ),
            ));
        }
        read(self.table()).ok_or_else(|| {
            self.not_offered(
                operation,
                "its function table leaves this optional entry point empty".to_owned(),
            )
        })
    }

    /// Turns a status into a result; [`STATUS_UNSUPPORTED`] becomes
    /// [`OptionalCallError::NotOffered`] with the plugin's reason.
    fn check_optional(
        &self,
        operation: OptionalOperation,
        status: Status,
        err: VecSink,
    ) -> Result<(), OptionalCallError> {
        if status == STATUS_UNSUPPORTED {
            return Err(self.not_offered(operation, err.text()));
        }
        Ok(self.check(operation.name(), status, err)?)
    }

    /// Fails with [`OptionalCallError::NotOffered`] unless the plugin has `operation` and
    /// implements it for its parameters: asks the plugin with a small probe (a genome of
    /// seed 0, a zero gradient, a zero step, a gray image), so a search can refuse an encoding
    /// before it starts. A probe call that fails otherwise is returned as `Failed`.
    pub fn check_offers(&self, operation: OptionalOperation) -> Result<(), OptionalCallError> {
        let probe = vec![0.0f32; self.image_len()];
        match operation {
            OptionalOperation::GenomeFromPixels => self.genome_from_pixels(&probe).map(drop),
            OptionalOperation::Pullback | OptionalOperation::ApplyStep => {
                // Check the entry before running any plugin code.
                self.optional(operation, |_| Some(()))?;
                let genome = self.random(0)?;
                let pulled = self.pullback(&genome, &probe)?;
                if operation == OptionalOperation::ApplyStep {
                    self.apply_step(&genome, &vec![0.0; pulled.len()])?;
                }
                Ok(())
            }
        }
    }

    /// (ABI 1.1, optional) The genome whose render is `pixels`: [`Self::image_len`] values in
    /// canvas units (`0.0..=255.0`, render layout).
    pub fn genome_from_pixels(&self, pixels: &[f32]) -> Result<Vec<u8>, OptionalCallError> {
        let f = self.optional(OptionalOperation::GenomeFromPixels, |t| {
            // SAFETY: `optional` checked that the table covers the field.
            unsafe { (*t).genome_from_pixels }
        })?;
        let (mut out, mut err) = (VecSink::default(), VecSink::default());
        // SAFETY: live instance; `pixels` and the sinks live through the call.
        let status = unsafe {
            f(
                self.instance,
                pixels.as_ptr(),
                pixels.len(),
                out.as_sink(),
                err.as_sink(),
            )
        };
        self.check_optional(OptionalOperation::GenomeFromPixels, status, err)?;
        Ok(out.0)
    }

    /// (ABI 1.1, optional) The vector-Jacobian product of `render` at `genome`: given
    /// dL/dpixel for each of the [`Self::image_len`] canvas values, dL/dθ for the genome's
    /// parameter vector θ (the one [`Self::apply_step`] moves; its length may depend on the
    /// genome).
    pub fn pullback(
        &self,
        genome: &[u8],
        pixel_gradient: &[f32],
    ) -> Result<Vec<f32>, OptionalCallError> {
        let f = self.optional(OptionalOperation::Pullback, |t| {
            // SAFETY: `optional` checked that the table covers the field.
            unsafe { (*t).pullback }
        })?;
        let (mut out, mut err) = (VecSink::default(), VecSink::default());
        // SAFETY: live instance; genome, gradient and sinks live through the call.
        let status = unsafe {
            f(
                self.instance,
                BytesRef::new(genome),
                pixel_gradient.as_ptr(),
                pixel_gradient.len(),
                out.as_sink(),
                err.as_sink(),
            )
        };
        self.check_optional(OptionalOperation::Pullback, status, err)?;
        if out.0.len() % 4 != 0 {
            return Err(PluginCallError {
                plugin: self.name().to_owned(),
                operation: "pullback".to_owned(),
                panicked: false,
                message: format!(
                    "wrote {} bytes, not a whole number of f32 values",
                    out.0.len()
                ),
            }
            .into());
        }
        Ok(out
            .0
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// (ABI 1.1, optional) The genome with parameters θ + `step` (as long as
    /// [`Self::pullback`]'s result for this genome), kept in the encoding's ranges.
    pub fn apply_step(&self, genome: &[u8], step: &[f32]) -> Result<Vec<u8>, OptionalCallError> {
        let f = self.optional(OptionalOperation::ApplyStep, |t| {
            // SAFETY: `optional` checked that the table covers the field.
            unsafe { (*t).apply_step }
        })?;
        let (mut out, mut err) = (VecSink::default(), VecSink::default());
        // SAFETY: live instance; genome, step and sinks live through the call.
        let status = unsafe {
            f(
                self.instance,
                BytesRef::new(genome),
                step.as_ptr(),
                step.len(),
                out.as_sink(),
                err.as_sink(),
            )
        };
        self.check_optional(OptionalOperation::ApplyStep, status, err)?;
        Ok(out.0)
    }

    fn check(&self, operation: &str, status: Status, err: VecSink) -> Result<(), PluginCallError> {
        if status == STATUS_OK {
            return Ok(());
        }
        Err(PluginCallError {
            plugin: self.name().to_owned(),
            operation: operation.to_owned(),
            panicked: status == STATUS_PANIC,
            message: err.text(),
        })
    }

    /// A random genome.
    pub fn random(&self, seed: u64) -> Result<Vec<u8>, PluginCallError> {
        let (mut out, mut err) = (VecSink::default(), VecSink::default());
        // SAFETY: live instance; sinks live through the call.
        let status =
            unsafe { ((*self.table()).random)(self.instance, seed, out.as_sink(), err.as_sink()) };
        self.check("random", status, err)?;
        Ok(out.0)
    }

    /// A mutated copy of `genome`.
    pub fn mutate(
        &self,
        genome: &[u8],
        generation: u64,
        seed: u64,
    ) -> Result<Vec<u8>, PluginCallError> {
        let (mut out, mut err) = (VecSink::default(), VecSink::default());
        // SAFETY: live instance; genome and sinks live through the call.
        let status = unsafe {
            ((*self.table()).mutate)(
                self.instance,
                BytesRef::new(genome),
                generation,
                seed,
                out.as_sink(),
                err.as_sink(),
            )
        };
        self.check("mutate", status, err)?;
        Ok(out.0)
    }

    /// Two children of two parents, before mutation.
    pub fn crossover(
        &self,
        a: &[u8],
        b: &[u8],
        seed: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), PluginCallError> {
        let (mut oa, mut ob, mut err) =
            (VecSink::default(), VecSink::default(), VecSink::default());
        // SAFETY: live instance; inputs and sinks live through the call.
        let status = unsafe {
            ((*self.table()).crossover)(
                self.instance,
                BytesRef::new(a),
                BytesRef::new(b),
                seed,
                oa.as_sink(),
                ob.as_sink(),
                err.as_sink(),
            )
        };
        self.check("crossover", status, err)?;
        Ok((oa.0, ob.0))
    }

    /// Renders `genome` into `pixels` (exactly [`Self::image_len`] bytes).
    pub fn render(&self, genome: &[u8], pixels: &mut [u8]) -> Result<(), PluginCallError> {
        let mut err = VecSink::default();
        // SAFETY: live instance; `pixels` is a writable buffer of the length passed.
        let status = unsafe {
            ((*self.table()).render)(
                self.instance,
                BytesRef::new(genome),
                pixels.as_mut_ptr(),
                pixels.len(),
                err.as_sink(),
            )
        };
        self.check("render", status, err)
    }

    /// A JSON description of `genome`.
    pub fn describe(&self, genome: &[u8]) -> Result<String, PluginCallError> {
        let (mut out, mut err) = (VecSink::default(), VecSink::default());
        // SAFETY: live instance; genome and sinks live through the call.
        let status = unsafe {
            ((*self.table()).describe)(
                self.instance,
                BytesRef::new(genome),
                out.as_sink(),
                err.as_sink(),
            )
        };
        self.check("describe", status, err)?;
        Ok(out.text())
    }
}

impl Drop for EncodingPlugin {
    fn drop(&mut self) {
        // SAFETY: the instance came from this table's `create` and is destroyed once.
        unsafe { ((*self.table()).destroy)(self.instance) };
    }
}
