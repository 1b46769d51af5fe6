//! Models whose ONNX input fixes the batch dimension at 1, such as the ONNX model zoo's
//! AlexNet (`bvlcalexnet-12.onnx`: input `[1, 3, 224, 224]`, and a flatten before fc6 that
//! reshapes to a fixed `[1, 9216]`). Such a graph cannot run a batch, so the backends prepare it
//! for one image and wrap it in [`OneAtATime`], which runs the images of a batch one after the
//! other. Models with a dynamic batch dimension are not wrapped.

use crate::{EvalError, Model, PreparedModel};

/// A model prepared for batches of exactly one image, offered to callers as one that takes
/// batches of any size.
pub(crate) struct OneAtATime {
    inner: Box<dyn PreparedModel>,
    model: String,
    image_len: usize,
}

impl OneAtATime {
    /// Wraps `inner`, which `backend` prepared for `model` with a batch of 1, and says so once
    /// in the log.
    pub(crate) fn wrap(
        model: &Model,
        backend: &'static str,
        inner: Box<dyn PreparedModel>,
    ) -> Box<dyn PreparedModel> {
        tracing::info!(
            model = model.name(),
            backend,
            "model {} fixes its batch dimension at 1: running batches one image at a time",
            model.name()
        );
        Box::new(Self {
            inner,
            model: model.name().to_owned(),
            image_len: model.image_len(),
        })
    }
}

impl PreparedModel for OneAtATime {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn device(&self) -> String {
        self.inner.device()
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError> {
        if batch == 0 || images.len() != batch * self.image_len {
            return Err(EvalError::BadInput(format!(
                "model {}: {} bytes for {batch} images of {} bytes",
                self.model,
                images.len(),
                self.image_len
            )));
        }
        let mut out = Vec::with_capacity(batch * self.inner.classes());
        for image in images.chunks_exact(self.image_len) {
            out.extend(self.inner.infer(image, 1)?);
        }
        Ok(out)
    }

    fn preferred_batch(&self) -> usize {
        // Images run one by one anyway; bigger batches only save actor messages.
        16
    }

    fn warm_up(&mut self, _batch: usize, image_len: usize) -> Result<(), EvalError> {
        self.inner.warm_up(1, image_len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{Model, OutputKind};

    /// Accepts only batches of one 2-byte image; answers `[first byte, second byte]`.
    struct OnlyOne {
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl PreparedModel for OnlyOne {
        fn backend(&self) -> &'static str {
            "only-one"
        }
        fn device(&self) -> String {
            "cpu".into()
        }
        fn classes(&self) -> usize {
            2
        }
        fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError> {
            self.batches.lock().unwrap().push(batch);
            assert_eq!(
                (batch, images.len()),
                (1, 2),
                "a batch of more than one image"
            );
            Ok(images.iter().map(|&b| f32::from(b)).collect())
        }
    }

    fn model() -> Model {
        Model::tiny(Vec::new(), (2, 1), 255.0, OutputKind::Logits, &["a", "b"])
    }

    #[test]
    fn a_batch_runs_image_by_image_in_order() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let inner = Box::new(OnlyOne {
            batches: batches.clone(),
        });
        let mut m = OneAtATime::wrap(&model(), "only-one", inner);
        assert_eq!((m.backend(), m.classes()), ("only-one", 2));
        let out = m.infer(&[1, 2, 3, 4, 5, 6], 3).unwrap();
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(*batches.lock().unwrap(), vec![1, 1, 1]);
        // Warming up for a batch of 8 is warming up for one image.
        m.warm_up(8, 2).unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![1, 1, 1, 1]);
        // A byte count that is not `batch` images is refused before anything runs.
        for (images, batch) in [(&[1u8, 2, 3][..], 1), (&[1, 2, 3, 4][..], 3), (&[][..], 0)] {
            let err = m.infer(images, batch).unwrap_err().to_string();
            assert!(err.contains("model tiny"), "{err}");
        }
        assert_eq!(batches.lock().unwrap().len(), 4);
    }
}
