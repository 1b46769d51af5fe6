//! A live instance of a fitness plugin.

use std::ffi::c_void;
use std::sync::Arc;

use pareidolia_plugin::abi::{
    FitnessSpec, FitnessVTable, OUTPUT_LOGITS, OUTPUT_PROBABILITIES, STATUS_OK, STATUS_PANIC,
    StrRef,
};

use super::sink::VecSink;
use super::{PluginCallError, PluginError, PluginKind, PluginLibrary};

/// A fitness plugin instance for a run's models. Dropping it destroys the instance.
#[derive(Debug)]
pub struct FitnessPlugin {
    library: Arc<PluginLibrary>,
    instance: *mut c_void,
    classes: usize,
}

// SAFETY: the SDK requires `Fitness: Send + Sync`; the library outlives the instance.
unsafe impl Send for FitnessPlugin {}
// SAFETY: as above.
unsafe impl Sync for FitnessPlugin {}

impl FitnessPlugin {
    /// Creates an instance for `classes` classes and one model per entry of `logits`
    /// (`true`: that model outputs logits, `false`: probabilities).
    pub fn create(
        library: Arc<PluginLibrary>,
        params_json: &str,
        classes: usize,
        logits: &[bool],
    ) -> Result<Self, PluginError> {
        library.expect_kind(PluginKind::Fitness)?;
        let kinds: Vec<u32> = logits
            .iter()
            .map(|&l| {
                if l {
                    OUTPUT_LOGITS
                } else {
                    OUTPUT_PROBABILITIES
                }
            })
            .collect();
        let spec = FitnessSpec {
            classes: classes as u32,
            models: kinds.len() as u32,
            output_kinds: kinds.as_ptr(),
        };
        let mut err = VecSink::default();
        let mut instance: *mut c_void = std::ptr::null_mut();
        let vtable = library.vtable() as *const FitnessVTable;
        // SAFETY: kind checked, so the table is a `FitnessVTable`; all arguments live through
        // the call.
        let status = unsafe {
            ((*vtable).create)(StrRef::new(params_json), spec, &mut instance, err.as_sink())
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
            classes,
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

    fn table(&self) -> &FitnessVTable {
        // SAFETY: kind checked at creation; static data of the loaded library.
        unsafe { &*(self.library.vtable() as *const FitnessVTable) }
    }

    /// Scores a batch: `outputs` holds `models * batch * classes` values (model-major); returns
    /// `batch * classes` scores. Scores are returned as the plugin wrote them: the caller
    /// rejects the children whose rows are not finite, one by one.
    pub fn score(&self, outputs: &[f32], batch: usize) -> Result<Vec<f32>, PluginCallError> {
        let mut scores = vec![0.0f32; batch * self.classes];
        let mut err = VecSink::default();
        // SAFETY: live instance; both buffers live through the call with the lengths passed.
        let status = unsafe {
            (self.table().score)(
                self.instance,
                outputs.as_ptr(),
                outputs.len(),
                batch,
                scores.as_mut_ptr(),
                scores.len(),
                err.as_sink(),
            )
        };
        let fail = |panicked, message| PluginCallError {
            plugin: self.name().to_owned(),
            operation: "score".to_owned(),
            panicked,
            message,
        };
        if status != STATUS_OK {
            return Err(fail(status == STATUS_PANIC, err.text()));
        }
        Ok(scores)
    }
}

impl Drop for FitnessPlugin {
    fn drop(&mut self) {
        // SAFETY: the instance came from this table's `create` and is destroyed once.
        unsafe { (self.table().destroy)(self.instance) };
    }
}
