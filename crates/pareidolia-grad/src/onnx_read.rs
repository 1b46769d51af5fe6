//! The one ONNX reader of this crate: node attributes and tensor values as tract's prost
//! types (`tract_onnx::pb`) hold them. The gradient builder ([`crate::grad`]) and the file
//! editor ([`crate::OnnxGraph`]) both read graphs through these functions, so a tensor's
//! storage (typed fields or little-endian `raw_data`), its element types and external data
//! are handled in one place.

use tract_onnx::pb;

/// ONNX `TensorProto.DataType` codes this reader knows.
pub(crate) mod data_type {
    use tract_onnx::pb::tensor_proto::DataType;
    /// 32-bit float.
    pub(crate) const FLOAT: i32 = DataType::Float as i32;
    /// 32-bit signed integer.
    pub(crate) const INT32: i32 = DataType::Int32 as i32;
    /// 64-bit signed integer.
    pub(crate) const INT64: i32 = DataType::Int64 as i32;
    /// 64-bit float.
    pub(crate) const DOUBLE: i32 = DataType::Double as i32;
}

/// A node's name for messages: its own, or its first output's where it has none.
pub(crate) fn node_name(node: &pb::NodeProto) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

/// The attribute `name` of `node`, if it is set.
pub(crate) fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute.
pub(crate) fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

/// A float attribute.
pub(crate) fn attr_float(node: &pb::NodeProto, name: &str) -> Option<f32> {
    attr(node, name).map(|a| a.f)
}

/// A list-of-integers attribute.
pub(crate) fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// Whether the tensor's values live in an external data file.
pub(crate) fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
}

/// The number of elements of a shape (negative dimensions count as zero).
pub(crate) fn element_count(dims: &[i64]) -> usize {
    dims.iter().map(|&d| d.max(0) as usize).product()
}

/// A float32 tensor's values, from `raw_data` or `float_data`.
pub(crate) fn float_values(t: &pb::TensorProto) -> Vec<f32> {
    if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("chunks of 4")))
            .collect()
    }
}

/// An int64 tensor's values, from `raw_data` or `int64_data`.
pub(crate) fn int64_values(t: &pb::TensorProto) -> Vec<i64> {
    if t.raw_data.is_empty() {
        t.int64_data.clone()
    } else {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect()
    }
}

/// A tensor's shape and values as f64 (float, double, int32 and int64 exactly; raw or typed
/// fields), or why it cannot be read.
pub(crate) fn values_f64(t: &pb::TensorProto) -> Result<(Vec<usize>, Vec<f64>), String> {
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    if is_external(t) {
        return Err("external data files are not supported; embed the weights".into());
    }
    let raw = &t.raw_data;
    let data: Vec<f64> = match t.data_type {
        data_type::FLOAT => float_values(t).into_iter().map(f64::from).collect(),
        data_type::DOUBLE if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        data_type::DOUBLE => t.double_data.clone(),
        data_type::INT64 => int64_values(t).into_iter().map(|v| v as f64).collect(),
        data_type::INT32 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| f64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))))
            .collect(),
        data_type::INT32 => t.int32_data.iter().map(|&v| f64::from(v)).collect(),
        other => return Err(format!("tensor data type {other} is not supported")),
    };
    let expected: usize = shape.iter().product();
    if data.len() != expected {
        return Err(format!(
            "tensor `{}` holds {} values for shape {shape:?}",
            t.name,
            data.len()
        ));
    }
    Ok((shape, data))
}
