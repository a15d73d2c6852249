//! Reading the tensor directory of a PyTorch `.bin` file (`torch.save`, zip format).
//!
//! The archive holds `<stem>/data.pkl` (the pickled state dict, see [`super::pickle`]) and one
//! entry `<stem>/data/<key>` per storage with its raw little-endian elements
//! (`torch/serialization.py`, `_save`). `torch.save` stores entries uncompressed, which is what
//! lets a tensor be read in place with `seek` + `read_exact`; a compressed entry is refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, PickleError, PickledTensor};
use super::{last_element, CheckpointError, DType, FoundTensor, Placement, TensorMeta};

/// Largest `data.pkl` accepted (the real 6B pickles are tens of kilobytes).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// A storage entry of the archive.
#[derive(Clone, Copy)]
struct StorageEntry {
    dtype: DType,
    /// Byte offset of its data in the file.
    start: u64,
    /// Number of elements.
    numel: u64,
}

/// Reads the zip directory and the pickle of the `.bin` file `path`, and locates every
/// tensor's storage. Reads no tensor data.
pub(crate) fn read_tensors(path: &Path) -> Result<Vec<FoundTensor>, CheckpointError> {
    let zip_err = |reason: String| CheckpointError::Zip {
        path: path.to_path_buf(),
        reason,
    };
    let io = |e| CheckpointError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"PK\x03\x04" {
        return Err(zip_err(
            "not a zip archive (the legacy torch.save format of torch < 1.6 is not supported)"
                .to_owned(),
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(describe(&e)))?;

    // `<stem>/data.pkl`, whatever the stem.
    let pickles: Vec<String> = archive
        .file_names()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_owned)
        .collect();
    let pkl_name = match pickles.as_slice() {
        [one] => one.clone(),
        [] => return Err(zip_err("no <stem>/data.pkl entry".to_owned())),
        many => return Err(zip_err(format!("several data.pkl entries: {many:?}"))),
    };
    let stem = pkl_name.trim_end_matches("/data.pkl").to_owned();
    let pkl_entry = locate(&mut archive, &pkl_name, file_len).map_err(zip_err)?;
    if pkl_entry.1 > MAX_PICKLE_BYTES {
        return Err(zip_err(format!(
            "{pkl_name} is {} bytes, more than {MAX_PICKLE_BYTES}",
            pkl_entry.1
        )));
    }
    let bytes = read_entry(path, pkl_entry)?;

    // `<stem>/byteorder` (torch >= 2.1) says how storages are stored; absent means little.
    let byteorder_name = format!("{stem}/byteorder");
    if archive.index_for_name(&byteorder_name).is_some() {
        let entry = locate(&mut archive, &byteorder_name, file_len).map_err(zip_err)?;
        if entry.1 > 16 || read_entry(path, entry)? != b"little" {
            return Err(zip_err(format!(
                "{byteorder_name} is not \"little\": big-endian storages are not supported"
            )));
        }
    }

    let pickled = pickle::load_state_dict(&bytes).map_err(|e| match e {
        PickleError::Malformed { offset, reason } => CheckpointError::Pickle {
            path: path.to_path_buf(),
            offset,
            reason,
        },
        PickleError::ForbiddenGlobal { module, name } => CheckpointError::ForbiddenGlobal {
            path: path.to_path_buf(),
            module,
            name,
        },
    })?;

    let mut storages: HashMap<String, StorageEntry> = HashMap::new();
    let mut found = Vec::with_capacity(pickled.len());
    for t in pickled {
        let storage = match storages.get(&t.storage.key) {
            Some(s) => *s,
            None => {
                let s = storage_entry(&mut archive, path, &stem, &t, file_len)?;
                storages.insert(t.storage.key.clone(), s);
                s
            }
        };
        found.push(place(path, t, storage)?);
    }
    Ok(found)
}

/// Reads `(start, size)` bytes of `path`.
fn read_entry(path: &Path, (start, size): (u64, u64)) -> Result<Vec<u8>, CheckpointError> {
    let io = |e| CheckpointError::io(path, e);
    let mut bytes = vec![
        0u8;
        usize::try_from(size).map_err(|_| CheckpointError::Zip {
            path: path.to_path_buf(),
            reason: format!("entry of {size} bytes"),
        })?
    ];
    let mut file = File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    file.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// The zip error as text.
fn describe(e: &ZipError) -> String {
    format!("{e} (truncated or not a zip file?)")
}

/// `(data start, size)` of the uncompressed entry `name`, checked to lie inside the file.
fn locate<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    name: &str,
    file_len: u64,
) -> Result<(u64, u64), String> {
    let index = archive
        .index_for_name(name)
        .ok_or_else(|| format!("no entry {name}"))?;
    let entry = archive
        .by_index_raw(index)
        .map_err(|e| format!("entry {name}: {}", describe(&e)))?;
    if entry.compression() != CompressionMethod::Stored {
        return Err(format!(
            "entry {name} is compressed ({:?}); torch.save stores entries uncompressed",
            entry.compression()
        ));
    }
    if entry.encrypted() {
        return Err(format!("entry {name} is encrypted"));
    }
    let (start, size) = (entry.data_start(), entry.size());
    if entry.compressed_size() != size {
        return Err(format!(
            "entry {name} is stored but its compressed size {} differs from its size {size}",
            entry.compressed_size()
        ));
    }
    match start.checked_add(size) {
        Some(end) if end <= file_len => Ok((start, size)),
        _ => Err(format!(
            "entry {name} ({size} bytes at {start}) runs past the end of the file \
             ({file_len} bytes): truncated?"
        )),
    }
}

/// Finds the storage of `t` in the archive and checks it holds `numel` elements.
fn storage_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    path: &Path,
    stem: &str,
    t: &PickledTensor,
    file_len: u64,
) -> Result<StorageEntry, CheckpointError> {
    let name = format!("{stem}/data/{}", t.storage.key);
    let (start, size) = locate(archive, &name, file_len)
        .map_err(|reason| CheckpointError::bad_tensor(path, &t.name, reason))?;
    let need = t.storage.numel.checked_mul(t.storage.dtype.size() as u64);
    if !matches!(need, Some(need) if need <= size) {
        return Err(CheckpointError::bad_tensor(
            path,
            &t.name,
            format!(
                "storage {name} should hold {} {} elements but has {size} bytes",
                t.storage.numel, t.storage.dtype
            ),
        ));
    }
    Ok(StorageEntry {
        dtype: t.storage.dtype,
        start,
        numel: t.storage.numel,
    })
}

/// Checks the view `t` against its storage and makes its [`FoundTensor`].
fn place(
    path: &Path,
    t: PickledTensor,
    storage: StorageEntry,
) -> Result<FoundTensor, CheckpointError> {
    let bad = |reason: String| CheckpointError::bad_tensor(path, &t.name, reason);
    if storage.dtype != t.storage.dtype {
        return Err(bad(format!(
            "storage {} is used as {} and as {}",
            t.storage.key, storage.dtype, t.storage.dtype
        )));
    }
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", t.shape)))?;
    if numel > 0 {
        match last_element(&t.shape, &t.strides, t.offset) {
            Some(last) if last < storage.numel => {}
            _ => {
                return Err(bad(format!(
                    "view (offset {}, size {:?}, stride {:?}) reaches past the end of storage \
                     {} ({} elements)",
                    t.offset, t.shape, t.strides, t.storage.key, storage.numel
                )))
            }
        }
    }
    Ok(FoundTensor {
        placement: Placement {
            storage_start: storage.start,
            storage_numel: storage.numel,
            offset: t.offset,
            strides: t.strides,
        },
        meta: TensorMeta {
            name: t.name,
            dtype: storage.dtype,
            shape: t.shape,
        },
    })
}
