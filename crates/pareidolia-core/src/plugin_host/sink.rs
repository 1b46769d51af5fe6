//! Host-owned byte sinks handed to plugins as [`ByteSink`] callbacks.

use std::ffi::c_void;

use pareidolia_plugin::abi::ByteSink;

/// Collects what a plugin writes through a [`ByteSink`].
#[derive(Debug, Default)]
pub struct VecSink(pub Vec<u8>);

extern "C" fn append(ctx: *mut c_void, data: *const u8, len: usize) {
    if ctx.is_null() || (data.is_null() && len > 0) {
        return;
    }
    // SAFETY: `ctx` is the `VecSink` borrowed mutably by `as_sink` for the duration of the
    // call, and the plugin passes `len` readable bytes at `data`.
    unsafe {
        let sink = &mut *(ctx as *mut VecSink);
        if len > 0 {
            sink.0
                .extend_from_slice(std::slice::from_raw_parts(data, len));
        }
    }
}

impl VecSink {
    /// A sink writing into `self`; valid while `self` is borrowed.
    pub fn as_sink(&mut self) -> ByteSink {
        ByteSink {
            ctx: self as *mut VecSink as *mut c_void,
            write: append,
        }
    }

    /// The collected bytes as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}
