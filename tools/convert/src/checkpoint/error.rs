//! The error type of the checkpoint readers.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while finding, opening or reading a checkpoint.
///
/// Every variant names the file, and where it applies the tensor, shard or pickle offset.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint directory does not exist (or is not a directory).
    #[error("checkpoint directory {0} does not exist or is not a directory")]
    DirNotFound(PathBuf),

    /// The directory holds none of the weight layouts that Hugging Face checkpoints use.
    #[error(
        "no weights found in {0}: expected model.safetensors, model.safetensors.index.json, \
         model-0000i-of-0000N.safetensors, pytorch_model.bin, pytorch_model.bin.index.json \
         or pytorch_model-0000i-of-0000N.bin"
    )]
    NoWeights(PathBuf),

    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A shard index (`*.index.json`) is malformed.
    #[error("shard index {index}: {reason}")]
    BadIndex {
        /// The index file.
        index: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A shard named by an index (or implied by a shard file name) is not in the directory.
    #[error("shard {shard} (named by {by}) is missing")]
    MissingShard {
        /// The missing shard file name.
        shard: String,
        /// The index file, or the sibling shard, that names it.
        by: PathBuf,
    },

    /// Numbered shard files (without an index) that do not form one complete set.
    #[error("shards in {dir}: {reason}")]
    BadShardSet {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The index maps a tensor to a shard that does not contain it.
    #[error("tensor {tensor} is mapped to shard {shard} by the index, but that shard does not contain it")]
    TensorNotInShard {
        /// The tensor name.
        tensor: String,
        /// The shard file.
        shard: PathBuf,
    },

    /// The same tensor name appears twice (in two shards, or twice in one file).
    #[error("tensor {tensor} appears twice: in {first} and in {second}")]
    DuplicateTensor {
        /// The tensor name.
        tensor: String,
        /// Where it was seen first.
        first: PathBuf,
        /// Where it was seen again.
        second: PathBuf,
    },

    /// A safetensors file whose header is malformed.
    #[error("{path}: bad safetensors header: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A PyTorch `.bin` file that is not a readable zip archive of the `torch.save` kind.
    #[error("{path}: bad PyTorch zip archive: {reason}")]
    Zip {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The pickle (`data.pkl`) of a PyTorch file is malformed or outside the supported subset.
    #[error("{path}: pickle byte {offset}: {reason}")]
    Pickle {
        /// The `.bin` file.
        path: PathBuf,
        /// Byte offset in `data.pkl` of the opcode that failed.
        offset: usize,
        /// What is wrong.
        reason: String,
    },

    /// The pickle refers to a global that the reader does not allow (nothing is ever executed).
    #[error("{path}: pickle refers to global {module}.{name}, which is not allowed")]
    ForbiddenGlobal {
        /// The `.bin` file.
        path: PathBuf,
        /// The module part of the global.
        module: String,
        /// The name part of the global.
        name: String,
    },

    /// A tensor whose description is inconsistent (size, range, strides, storage).
    #[error("{path}: tensor {tensor}: {reason}")]
    BadTensor {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },

    /// A tensor stored with an element type other than F32, F16 or BF16.
    #[error("{path}: tensor {tensor} has dtype {dtype}; only F32, F16 and BF16 are supported")]
    UnsupportedDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The dtype as the file names it.
        dtype: String,
    },

    /// [`Checkpoint::read_f32`](super::Checkpoint::read_f32) was asked for a tensor that does
    /// not exist.
    #[error("no tensor named {0} in the checkpoint")]
    UnknownTensor(String),
}

impl CheckpointError {
    /// An [`CheckpointError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CheckpointError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`CheckpointError::BadTensor`].
    pub(crate) fn bad_tensor(
        path: impl Into<PathBuf>,
        tensor: &str,
        reason: impl Into<String>,
    ) -> Self {
        CheckpointError::BadTensor {
            path: path.into(),
            tensor: tensor.to_owned(),
            reason: reason.into(),
        }
    }
}
