//! The ONNX Runtime backend, on the CPU (`ort-cpu`) or on a CUDA GPU (`cuda`).
//!
//! One session per prepared model, built once; ONNX Runtime handles every batch size with it
//! (the batch dimension stays dynamic). A graph whose input fixes the batch dimension at 1 runs
//! the images of a batch one at a time ([`OneAtATime`]); any other fixed batch is refused.
//! Each batch is preprocessed by the shared [`Preprocessor`] into a buffer that the model keeps
//! between calls, and handed to ONNX Runtime as a borrowed tensor, so the only copies are the
//! preprocessing itself and the `batch x classes` outputs.
//!
//! CUDA is never a silent fallback: the CUDA execution provider is registered with
//! `error_on_failure`, so a CPU-only build, missing CUDA libraries or a missing GPU fail the
//! `cuda` backend with [`EvalError::CudaUnavailable`] instead of quietly running on the CPU.
//! Falling back is [`crate::BackendChoice::Auto`]'s job, and it says so in the log.

use std::path::PathBuf;
use std::sync::Arc;

use ort::ep::{self, ExecutionProvider as _};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::fixed_batch::OneAtATime;
use crate::ort_runtime::{Runtime, runtime};
use crate::{EvalError, Layout, Model, PreparedModel, Preprocessor};

/// Where an [`OrtBackend`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrtDevice {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// The CUDA execution provider on this GPU (CUDA device index).
    Cuda(i32),
}

/// Settings of the ONNX Runtime backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// The ONNX Runtime library, or a folder holding `libonnxruntime.so*`; searched before
    /// `ORT_DYLIB_PATH` and the Python package.
    pub library: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one operator; 0 lets it choose (one per physical
    /// core). The default is 1, like tract: an experiment already keeps the other cores busy
    /// with mutator actors, and ONNX Runtime's thread pool loses badly when a core it counts
    /// on is busy (BENCHMARKS.md, issue 7: on 2 vCPUs with one core taken, 2 threads ran
    /// LeNet 2 to 4 times slower than 1, and AlexNet no faster).
    pub intra_threads: usize,
    /// The CUDA execution provider's settings (`cuda`, and `auto`'s first try).
    pub cuda: CudaTuning,
}

impl Default for OrtOptions {
    fn default() -> Self {
        Self {
            library: None,
            intra_threads: 1,
            cuda: CudaTuning::default(),
        }
    }
}

/// How cuDNN picks convolution algorithms (`model.cuda.conv_algorithm_search`).
pub use pareidolia_core::ConvSearch;

/// Settings of ONNX Runtime's CUDA execution provider. The defaults are the ones that helped
/// on an H100 with EfficientNet-Lite0 at batch 256 (issue 7): NHWC, the largest cuDNN
/// workspace, exhaustive algorithm search and TF32 (about 1e-3 relative precision in
/// convolutions and matrix products, instead of FP32's 1e-7; set `tf32 = false` for FP32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaTuning {
    /// CUDA device index.
    pub device: i32,
    /// cuDNN convolution algorithm search.
    pub conv_algorithm_search: ConvSearch,
    /// Let cuDNN use as much workspace memory as its fastest algorithm wants.
    pub conv_max_workspace: bool,
    /// Run convolutions in NHWC layout (tensor cores prefer it).
    pub prefer_nhwc: bool,
    /// Allow TF32 tensor-core math.
    pub tf32: bool,
}

impl Default for CudaTuning {
    fn default() -> Self {
        Self {
            device: 0,
            conv_algorithm_search: ConvSearch::Exhaustive,
            conv_max_workspace: true,
            prefer_nhwc: true,
            tf32: true,
        }
    }
}

impl CudaTuning {
    /// The execution provider with these settings.
    fn provider(&self, device: i32) -> ep::CUDA {
        let search = match self.conv_algorithm_search {
            ConvSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
            ConvSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
            ConvSearch::Default => ep::cuda::ConvAlgorithmSearch::Default,
        };
        ep::CUDA::default()
            .with_device_id(device)
            .with_conv_algorithm_search(search)
            .with_conv_max_workspace(self.conv_max_workspace)
            .with_prefer_nhwc(self.prefer_nhwc)
            .with_tf32(self.tf32)
    }
}

/// The ONNX Runtime backend.
#[derive(Debug, Clone)]
pub struct OrtBackend {
    device: OrtDevice,
    options: OrtOptions,
}

impl OrtBackend {
    /// On the CPU.
    pub fn cpu(options: OrtOptions) -> Self {
        Self {
            device: OrtDevice::Cpu,
            options,
        }
    }

    /// On CUDA device `device`.
    pub fn cuda(device: i32, options: OrtOptions) -> Self {
        Self {
            device: OrtDevice::Cuda(device),
            options,
        }
    }

    /// The device it runs on.
    pub fn device(&self) -> OrtDevice {
        self.device
    }

    /// A builder with the library loaded and, for CUDA, the provider registered; errors for
    /// CUDA are already [`EvalError::CudaUnavailable`].
    fn builder(&self, model: &str) -> Result<(Arc<Runtime>, SessionBuilder), EvalError> {
        let cuda_refused = |tried: String, reason: String| EvalError::CudaUnavailable {
            model: model.to_owned(),
            tried,
            reason,
        };
        let rt = match runtime(self.options.library.as_deref()) {
            Ok(rt) => rt,
            Err(e) => {
                return Err(match self.device {
                    OrtDevice::Cpu => e,
                    OrtDevice::Cuda(id) => cuda_refused(
                        format!("ONNX Runtime's CUDA execution provider on device {id}"),
                        e.to_string(),
                    ),
                });
            }
        };
        let library_failed = |e: String| EvalError::OrtLibrary {
            path: rt.library.clone(),
            message: e,
        };
        let mut builder = Session::builder(&rt.env)
            .map_err(|e| library_failed(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| library_failed(e.to_string()))?
            .with_intra_threads(self.options.intra_threads)
            .map_err(|e| library_failed(e.to_string()))?;
        if let OrtDevice::Cuda(id) = self.device {
            let tried = format!(
                "the CUDA execution provider on device {id} of {}",
                rt.describe()
            );
            match ep::CUDA::is_available() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(cuda_refused(
                        tried,
                        "this ONNX Runtime build has no CUDA execution provider (the CPU-only \
                         `onnxruntime` package?); install `onnxruntime-gpu` in its place, or \
                         point ORT_DYLIB_PATH at a CUDA-enabled library"
                            .into(),
                    ));
                }
                Err(e) => return Err(cuda_refused(tried, e.to_string())),
            }
            builder = builder
                .with_execution_providers([self
                    .options
                    .cuda
                    .provider(id)
                    .build()
                    .error_on_failure()])
                .map_err(|e| {
                    cuda_refused(tried.clone(), format!("the provider did not register: {e}"))
                })?;
        }
        Ok((rt, builder))
    }
}

impl crate::Backend for OrtBackend {
    fn name(&self) -> &'static str {
        match self.device {
            OrtDevice::Cpu => "ort-cpu",
            OrtDevice::Cuda(_) => "cuda",
        }
    }

    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>, EvalError> {
        let backend = crate::Backend::name(self);
        let (rt, mut builder) = self.builder(model.name())?;
        let session = builder
            .commit_from_memory(&model.onnx)
            .map_err(|e| match self.device {
                OrtDevice::Cpu => EvalError::NotOnnx {
                    path: model.onnx_path.clone(),
                    backend,
                    message: e.to_string(),
                },
                // The model may be at fault too, but the error text says which; on CUDA it most
                // often is the device (no GPU, driver or cuDNN missing).
                OrtDevice::Cuda(id) => EvalError::CudaUnavailable {
                    model: model.name().to_owned(),
                    tried: format!(
                        "a session on the CUDA execution provider, device {id}, of {}",
                        rt.describe()
                    ),
                    reason: format!("session creation failed: {e}"),
                },
            })?;
        let (input, output, fixed) = check_io(model, &session)?;
        let spec = &model.manifest.input;
        let (c, h, w) = (
            spec.channels as usize,
            spec.height as usize,
            spec.width as usize,
        );
        let dims = match spec.layout {
            Layout::Nchw => [c, h, w],
            Layout::Nhwc => [h, w, c],
        };
        let device = match self.device {
            OrtDevice::Cpu => "cpu".to_owned(),
            OrtDevice::Cuda(id) => format!("cuda:{id}"),
        };
        tracing::debug!(model = model.name(), backend, device, runtime = %rt.describe(), "prepared");
        let prepared = Box::new(OrtModel {
            name: model.name().to_owned(),
            backend,
            device,
            session,
            input,
            output,
            dims,
            pre: Preprocessor::new(spec),
            classes: model.classes(),
            buffer: Vec::new(),
        });
        Ok(if fixed {
            OneAtATime::wrap(model, backend, prepared)
        } else {
            prepared
        })
    }
}

impl OrtBackend {
    /// A session on any ONNX graph (not a classifier: several named inputs and outputs), on
    /// this backend's device and settings, for graphs the host builds itself (the gradient
    /// graphs of `pareidolia-grad`). `model` names the model the graph was made from, for
    /// errors; a graph ONNX Runtime refuses is [`EvalError::Inference`] (on CUDA,
    /// [`EvalError::CudaUnavailable`], as for a model).
    pub fn graph(&self, model: &str, onnx: &[u8]) -> Result<OrtGraph, EvalError> {
        let backend = crate::Backend::name(self);
        let (rt, mut builder) = self.builder(model)?;
        let session = builder
            .commit_from_memory(onnx)
            .map_err(|e| match self.device {
                OrtDevice::Cpu => EvalError::Inference {
                    backend,
                    model: model.to_owned(),
                    message: format!("ONNX Runtime refused the gradient graph: {e}"),
                },
                OrtDevice::Cuda(id) => EvalError::CudaUnavailable {
                    model: model.to_owned(),
                    tried: format!(
                        "a session on the CUDA execution provider, device {id}, of {}",
                        rt.describe()
                    ),
                    reason: format!("session creation failed: {e}"),
                },
            })?;
        let device = match self.device {
            OrtDevice::Cpu => match self.options.intra_threads {
                0 => "cpu (ONNX Runtime's thread count)".to_owned(),
                n => format!("cpu ({n} threads)"),
            },
            OrtDevice::Cuda(id) => format!("cuda:{id}"),
        };
        Ok(OrtGraph {
            model: model.to_owned(),
            backend,
            device,
            session,
        })
    }
}

/// A session on a host-built graph ([`OrtBackend::graph`]): `f32` tensors in, `f32` tensors
/// out, by name.
pub struct OrtGraph {
    model: String,
    backend: &'static str,
    device: String,
    session: Session,
}

impl std::fmt::Debug for OrtGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtGraph")
            .field("model", &self.model)
            .field("backend", &self.backend)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// A tensor handed to or returned by [`OrtGraph::run`]: its shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl OrtGraph {
    /// `ort-cpu` or `cuda`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Where it runs, for logs (`cpu (2 threads)`, `cuda:0`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Runs the graph on `inputs` (name, shape, values; borrowed, not copied) and returns
    /// `outputs` in the order asked.
    pub fn run(
        &mut self,
        inputs: &[(&str, &[usize], &[f32])],
        outputs: &[&str],
    ) -> Result<Vec<GraphTensor>, EvalError> {
        let failed = |message: String| EvalError::Inference {
            backend: self.backend,
            model: self.model.clone(),
            message,
        };
        let mut feed = Vec::with_capacity(inputs.len());
        for &(name, shape, values) in inputs {
            let tensor = TensorRef::from_array_view((shape.to_vec(), values))
                .map_err(|e| failed(format!("input `{name}`: {e}")))?;
            feed.push((
                name.to_owned(),
                ort::session::SessionInputValue::from(tensor),
            ));
        }
        let result = self.session.run(feed).map_err(|e| failed(e.to_string()))?;
        outputs
            .iter()
            .map(|&name| {
                let (shape, values) = result
                    .get(name)
                    .ok_or_else(|| failed(format!("the graph has no output `{name}`")))?
                    .try_extract_tensor::<f32>()
                    .map_err(|e| failed(format!("output `{name}`: {e}")))?;
                Ok(GraphTensor {
                    shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                    values: values.to_vec(),
                })
            })
            .collect()
    }
}

/// Picks the graph's input and output and checks them against the manifest, as the tract
/// backend does: float32, the input `[N, C, H, W]` (or NHWC) with C, H, W as declared, the
/// output `[N, classes]` (or `[N, classes, 1, 1]`). Dynamic dimensions (`-1`) match anything. The batch dimension must be
/// dynamic or 1; the third value returned says it is fixed at 1 (run one image at a time).
fn check_io(model: &Model, session: &Session) -> Result<(String, String, bool), EvalError> {
    let spec = &model.manifest.input;
    let mismatch = |message: String| EvalError::ShapeMismatch {
        model: model.name().to_owned(),
        message,
    };
    let inputs = session.inputs();
    let input = match inputs.iter().find(|i| i.name() == spec.name) {
        Some(i) => i,
        None => {
            let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
            return Err(mismatch(format!(
                "the graph has no input named `{}` (it has {names:?}); fix `input.name` in the manifest",
                spec.name
            )));
        }
    };
    let (ty, shape) = tensor_of(input.dtype());
    let expected = match spec.layout {
        Layout::Nchw => [spec.channels, spec.height, spec.width],
        Layout::Nhwc => [spec.height, spec.width, spec.channels],
    };
    let fits = shape.len() == 4
        && shape[1..]
            .iter()
            .zip(expected)
            .all(|(&d, e)| d < 0 || d == i64::from(e));
    if ty != Some(TensorElementType::Float32) || !fits {
        return Err(mismatch(format!(
            "the ONNX file declares input `{}` as {ty:?} {shape:?} but the manifest says float32 \
             {:?} {}x{}x{} (channels x height x width); fix `[input]` in the manifest",
            input.name(),
            spec.layout,
            spec.channels,
            spec.height,
            spec.width
        )));
    }
    let fixed = shape[0] == 1;
    if shape[0] >= 0 && !fixed {
        return Err(mismatch(format!(
            "the ONNX file fixes the batch dimension of input `{}` to {}, but batches of any size \
             are run (one image at a time when it is fixed at 1): re-export the model with a \
             dynamic (symbolic) first dimension",
            input.name(),
            shape[0]
        )));
    }
    let Some(output) = session.outputs().first() else {
        return Err(mismatch("the graph has no output".into()));
    };
    let (ty, shape) = tensor_of(output.dtype());
    let classes = model.classes() as i64;
    if ty != Some(TensorElementType::Float32)
        || !(shape.len() == 2 || (shape.len() == 4 && shape[2..].iter().all(|&d| d == 1 || d < 0)))
        || (shape[1] >= 0 && shape[1] != classes)
    {
        return Err(mismatch(format!(
            "the graph's output `{}` is {ty:?} {shape:?}, expected float32 [N, {classes}] (one value \
             per label in the labels file)",
            output.name()
        )));
    }
    Ok((input.name().to_owned(), output.name().to_owned(), fixed))
}

fn tensor_of(t: &ValueType) -> (Option<TensorElementType>, Vec<i64>) {
    (
        t.tensor_type(),
        t.tensor_shape().map(|s| s.to_vec()).unwrap_or_default(),
    )
}

struct OrtModel {
    name: String,
    backend: &'static str,
    device: String,
    session: Session,
    input: String,
    output: String,
    /// One image's dimensions in the input's layout (C, H, W or H, W, C).
    dims: [usize; 3],
    pre: Preprocessor,
    classes: usize,
    /// The preprocessed batch, kept to reuse its allocation.
    buffer: Vec<f32>,
}

impl OrtModel {
    fn failed(&self, message: String) -> EvalError {
        EvalError::Inference {
            backend: self.backend,
            model: self.name.clone(),
            message,
        }
    }
}

impl PreparedModel for OrtModel {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn device(&self) -> String {
        self.device.clone()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn preferred_batch(&self) -> usize {
        // CPU: LeNet peaks at 32 and EfficientNet-Lite0 is flat up to 32 (BENCHMARKS.md).
        // CUDA: 256 kept an H100 busy with EfficientNet-Lite0 (issue 7's measurements).
        if self.device.starts_with("cuda") {
            256
        } else {
            32
        }
    }

    fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError> {
        self.pre.check_batch(&self.name, images, batch)?;
        self.buffer.resize(images.len(), 0.0);
        self.pre.fill(images, &mut self.buffer);
        let [a, b, c] = self.dims;
        let tensor = TensorRef::from_array_view(([batch, a, b, c], &self.buffer[..]))
            .map_err(|e| self.failed(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| EvalError::Inference {
                backend: self.backend,
                model: self.name.clone(),
                message: e.to_string(),
            })?;
        let (shape, values) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| EvalError::Inference {
                backend: self.backend,
                model: self.name.clone(),
                message: e.to_string(),
            })?;
        if values.len() != batch * self.classes {
            return Err(EvalError::Inference {
                backend: self.backend,
                model: self.name.clone(),
                message: format!(
                    "output has shape {shape:?}, expected [{batch}, {}]",
                    self.classes
                ),
            });
        }
        Ok(values.to_vec())
    }
}
