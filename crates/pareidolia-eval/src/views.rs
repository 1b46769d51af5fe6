//! Views: how an image rendered at the canvas size becomes the model's input. `center` takes
//! the centre crop of the model's input size (nothing at all when the sizes match); `ten-crop`
//! scores the mean softmax over the ten standard crops (four corners and the centre, and their
//! horizontal mirrors), as Caffe's `oversample` and the paper's code do with 256x256 images
//! and 227x227 crops. A [`ViewedModel`] wraps any backend's prepared model, so every backend
//! gets views the same way.

use crate::{EvalError, Model, OutputKind, PreparedModel};

/// How a canvas is shown to the model (`model.view`).
pub use pareidolia_core::View;

/// The view and the canvas size it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSpec {
    /// The view.
    pub view: View,
    /// Canvas width in pixels.
    pub width: u32,
    /// Canvas height in pixels.
    pub height: u32,
}

impl ViewSpec {
    /// The model's own input size, seen whole.
    pub fn identity(model: &Model) -> Self {
        let input = &model.manifest.input;
        Self {
            view: View::Center,
            width: input.width,
            height: input.height,
        }
    }

    /// Checks that the model's input fits in the canvas.
    pub fn check(&self, model: &Model) -> Result<(), EvalError> {
        let input = &model.manifest.input;
        if self.width < input.width || self.height < input.height {
            return Err(EvalError::BadInput(format!(
                "{}x{} images are smaller than the {}x{} input of model {}; images (and model.canvas) must be at least that large",
                self.width,
                self.height,
                input.width,
                input.height,
                model.name()
            )));
        }
        Ok(())
    }

    /// Bytes of one canvas image for `model` (its channel count).
    pub fn canvas_len(&self, model: &Model) -> usize {
        self.width as usize * self.height as usize * model.manifest.input.channels as usize
    }

    /// Whether this view changes anything (a larger canvas or several crops).
    pub fn is_identity(&self, model: &Model) -> bool {
        let input = &model.manifest.input;
        self.view == View::Center && (self.width, self.height) == (input.width, input.height)
    }

    /// The model's output kind after the view: ten crops average probabilities.
    pub fn output(&self, model: &Model) -> OutputKind {
        match self.view {
            View::Center => model.manifest.output,
            View::TenCrop => OutputKind::Probabilities,
        }
    }

    /// Top-left corners of the crops (before mirroring), in Caffe's order: the four corners,
    /// then the centre.
    fn origins(&self, crop_w: u32, crop_h: u32) -> Vec<(u32, u32)> {
        let (dx, dy) = (self.width - crop_w, self.height - crop_h);
        let centre = (dx / 2, dy / 2);
        match self.view {
            View::Center => vec![centre],
            View::TenCrop => vec![(0, 0), (dx, 0), (0, dy), (dx, dy), centre],
        }
    }
}

/// A prepared model behind a view: takes canvas-size images, returns one output vector per
/// canvas image.
pub struct ViewedModel {
    inner: Box<dyn PreparedModel>,
    spec: ViewSpec,
    input: (u32, u32, u32),
    logits: bool,
    model: String,
    crops: Vec<u8>,
}

impl ViewedModel {
    /// Wraps `inner` (prepared for `model`) with `spec`; `spec` must fit (see
    /// [`ViewSpec::check`]).
    pub fn new(inner: Box<dyn PreparedModel>, model: &Model, spec: ViewSpec) -> Self {
        let i = &model.manifest.input;
        Self {
            inner,
            spec,
            input: (i.width, i.height, i.channels),
            logits: model.manifest.output == OutputKind::Logits,
            model: model.name().to_owned(),
            crops: Vec::new(),
        }
    }

    fn canvas_len(&self) -> usize {
        self.spec.width as usize * self.spec.height as usize * self.input.2 as usize
    }

    /// Cuts the crops of every image into `self.crops`, image by image, crops in order.
    fn cut(&mut self, images: &[u8], batch: usize) {
        let (cw, ch, c) = (
            self.input.0 as usize,
            self.input.1 as usize,
            self.input.2 as usize,
        );
        let width = self.spec.width as usize;
        let origins = self.spec.origins(self.input.0, self.input.1);
        let canvas_len = self.canvas_len();
        self.crops.clear();
        self.crops
            .reserve(batch * self.spec.view.crops() * cw * ch * c);
        for image in images.chunks_exact(canvas_len).take(batch) {
            let row = |y: usize, x0: usize| {
                let start = (y * width + x0) * c;
                &image[start..start + cw * c]
            };
            for &(x0, y0) in &origins {
                for y in y0 as usize..y0 as usize + ch {
                    self.crops.extend_from_slice(row(y, x0 as usize));
                }
            }
            if self.spec.view == View::TenCrop {
                for &(x0, y0) in &origins {
                    for y in y0 as usize..y0 as usize + ch {
                        for px in row(y, x0 as usize).chunks_exact(c).rev() {
                            self.crops.extend_from_slice(px);
                        }
                    }
                }
            }
        }
    }
}

impl PreparedModel for ViewedModel {
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
        if images.len() != batch * self.canvas_len() {
            return Err(EvalError::BadInput(format!(
                "model {} with a {} view of a {}x{} canvas expects {} bytes for {batch} images, got {}",
                self.model,
                self.spec.view,
                self.spec.width,
                self.spec.height,
                batch * self.canvas_len(),
                images.len()
            )));
        }
        self.cut(images, batch);
        let crops = std::mem::take(&mut self.crops);
        let n = self.spec.view.crops();
        let outputs = self.inner.infer(&crops, batch * n);
        self.crops = crops;
        let outputs = outputs?;
        if n == 1 {
            return Ok(outputs);
        }
        let classes = self.inner.classes();
        let mut mean = vec![0f32; batch * classes];
        let mut probs = vec![0f32; classes];
        for (image, out) in outputs
            .chunks_exact(n * classes)
            .zip(mean.chunks_exact_mut(classes))
        {
            for row in image.chunks_exact(classes) {
                if self.logits {
                    pareidolia_plugin::softmax(row, &mut probs);
                } else {
                    probs.copy_from_slice(row);
                }
                for (m, p) in out.iter_mut().zip(&probs) {
                    *m += p;
                }
            }
            for m in out.iter_mut() {
                *m /= n as f32;
            }
        }
        Ok(mean)
    }

    fn preferred_batch(&self) -> usize {
        (self.inner.preferred_batch() / self.spec.view.crops()).max(1)
    }

    fn selection(&self) -> Option<String> {
        self.inner.selection()
    }

    fn warm_up(&mut self, batch: usize, _image_len: usize) -> Result<(), EvalError> {
        let (w, h, c) = self.input;
        self.inner.warm_up(
            batch * self.spec.view.crops(),
            w as usize * h as usize * c as usize,
        )
    }
}

/// Prepares `model` on `backend` behind `spec` (no wrapper when the view changes nothing).
pub fn prepare_viewed(
    backend: &dyn crate::Backend,
    model: &Model,
    spec: ViewSpec,
) -> Result<Box<dyn PreparedModel>, EvalError> {
    spec.check(model)?;
    let prepared = backend.prepare(model)?;
    if spec.is_identity(model) {
        return Ok(prepared);
    }
    Ok(Box::new(ViewedModel::new(prepared, model, spec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it was given; answers each crop with its first pixel as "logits".
    struct Echo {
        seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        classes: usize,
        len: usize,
    }

    impl PreparedModel for Echo {
        fn backend(&self) -> &'static str {
            "echo"
        }
        fn device(&self) -> String {
            "cpu".into()
        }
        fn classes(&self) -> usize {
            self.classes
        }
        fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError> {
            self.seen.lock().unwrap().extend_from_slice(images);
            Ok(images
                .chunks_exact(self.len)
                .take(batch)
                .flat_map(|crop| {
                    let mut v = vec![0f32; self.classes];
                    v[0] = crop[0] as f32;
                    v
                })
                .collect())
        }
    }

    fn viewed(
        view: View,
        logits: bool,
    ) -> (ViewedModel, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let echo = Echo {
            seen: seen.clone(),
            classes: 2,
            len: 4,
        };
        let model = ViewedModel {
            inner: Box::new(echo),
            spec: ViewSpec {
                view,
                width: 4,
                height: 3,
            },
            input: (2, 2, 1),
            logits,
            model: "echo".into(),
            crops: Vec::new(),
        };
        (model, seen)
    }

    /// A 4x3 gray canvas whose pixel at (x, y) is 10 * y + x.
    fn canvas() -> Vec<u8> {
        (0..3u8)
            .flat_map(|y| (0..4u8).map(move |x| 10 * y + x))
            .collect()
    }

    #[test]
    fn ten_crops_are_corners_centre_and_their_mirrors() {
        let (mut m, seen) = viewed(View::TenCrop, false);
        m.infer(&canvas(), 1).unwrap();
        let crops: Vec<Vec<u8>> = seen.lock().unwrap().chunks(4).map(<[u8]>::to_vec).collect();
        assert_eq!(
            crops,
            vec![
                vec![0, 1, 10, 11],
                vec![2, 3, 12, 13],
                vec![10, 11, 20, 21],
                vec![12, 13, 22, 23],
                vec![1, 2, 11, 12],
                vec![1, 0, 11, 10],
                vec![3, 2, 13, 12],
                vec![11, 10, 21, 20],
                vec![13, 12, 23, 22],
                vec![2, 1, 12, 11],
            ]
        );
    }

    #[test]
    fn ten_crop_scores_are_the_mean_of_the_crops_probabilities() {
        // Probabilities pass through: class 0 gets the mean of the crops' first pixels.
        let (mut m, _) = viewed(View::TenCrop, false);
        let out = m.infer(&canvas(), 1).unwrap();
        let firsts = [0, 2, 10, 12, 1, 1, 3, 11, 13, 2];
        let mean = firsts.iter().sum::<i32>() as f32 / 10.0;
        assert!((out[0] - mean).abs() < 1e-5, "{out:?}");
        // Logits go through a softmax first, so each crop's probabilities sum to 1.
        let (mut m, _) = viewed(View::TenCrop, true);
        let out = m.infer(&canvas(), 1).unwrap();
        assert!((out[0] + out[1] - 1.0).abs() < 1e-5, "{out:?}");
        assert!(out[0] > 0.5);
    }

    #[test]
    fn the_centre_view_crops_the_middle_and_keeps_raw_outputs() {
        let (mut m, seen) = viewed(View::Center, true);
        let mut two = canvas();
        two.extend(canvas().iter().map(|v| v + 100));
        let out = m.infer(&two, 2).unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![1, 2, 11, 12, 101, 102, 111, 112]
        );
        assert_eq!(out, vec![1.0, 0.0, 101.0, 0.0]);
        assert!(m.infer(&two[..5], 1).is_err());
    }
}
