//! Read-only memory map of a model file. The only place in the runtime (besides the C ABI)
//! where `unsafe` is allowed.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;

/// A read-only, private memory map of a whole file.
///
/// The bytes are borrowed through [`Mmap::as_bytes`] for as long as the map lives.
#[derive(Debug)]
pub(crate) struct Mmap {
    map: memmap2::Mmap,
}

impl Mmap {
    /// Opens `path` read-only and maps the whole file. An empty file gives an empty slice.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: memmap2 requires that the mapped file is not modified (truncated or
        // overwritten) by anyone while the map lives; otherwise the slice we hand out could
        // change under us or fault (SIGBUS). We map read-only and never write through the map;
        // model files are treated as immutable inputs, the same contract llama.cpp and every
        // other mmap-based loader documents. Nothing else in this process writes to the file.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self { map })
    }

    /// The mapped bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.map
    }
}
