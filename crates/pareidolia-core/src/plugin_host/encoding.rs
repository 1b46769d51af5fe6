//! A live instance of an encoding plugin, callable from several threads.

use std::ffi::c_void;
use std::sync::Arc;

use pareidolia_plugin::abi::{
    BytesRef, CanvasSpec, EncodingVTable, STATUS_OK, STATUS_PANIC, Status, StrRef,
};

use super::sink::VecSink;
use super::{PluginCallError, PluginError, PluginKind, PluginLibrary};

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
        // SAFETY: the kind was checked, so the table is an `EncodingVTable`; the parameter
        // text and the out-pointer live through the call.
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

    fn table(&self) -> &EncodingVTable {
        // SAFETY: kind checked at creation; the table is static data of the loaded library.
        unsafe { &*(self.library.vtable() as *const EncodingVTable) }
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
            unsafe { (self.table().random)(self.instance, seed, out.as_sink(), err.as_sink()) };
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
            (self.table().mutate)(
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
            (self.table().crossover)(
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
            (self.table().render)(
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
            (self.table().describe)(
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
        unsafe { (self.table().destroy)(self.instance) };
    }
}
