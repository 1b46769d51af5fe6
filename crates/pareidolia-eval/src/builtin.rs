//! Models embedded in the binary, so the default experiment runs from a bare executable.

use crate::EvalError;

/// The files of one embedded model.
pub struct Builtin {
    /// Its name (`builtin:NAME`).
    pub name: &'static str,
    /// The manifest text.
    pub manifest: &'static str,
    /// The ONNX file name the manifest names.
    pub onnx_name: &'static str,
    /// The ONNX bytes.
    pub onnx: &'static [u8],
    /// The labels file.
    pub labels: &'static str,
}

const BUILTINS: &[Builtin] = &[Builtin {
    name: "lenet-mnist",
    manifest: include_str!("../../../models/lenet-mnist/manifest.toml"),
    onnx_name: "lenet-mnist.onnx",
    onnx: include_bytes!("../../../models/lenet-mnist/lenet-mnist.onnx"),
    labels: include_str!("../../../models/lenet-mnist/labels.txt"),
}];

/// Finds an embedded model by name.
pub fn find(name: &str) -> Result<&'static Builtin, EvalError> {
    BUILTINS
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| EvalError::UnknownBuiltin {
            name: name.to_owned(),
            available: BUILTINS
                .iter()
                .map(|b| b.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
