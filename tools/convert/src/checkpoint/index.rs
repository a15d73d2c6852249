//! Finding the weight files of a checkpoint directory, and the shard index
//! (`model.safetensors.index.json` / `pytorch_model.bin.index.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{CheckpointError, WeightFormat};

/// Largest index file accepted (the real 6B index is about 20 KB).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// How the files of one format are named: `<single>`, `<stem>.<ext>.index.json`,
/// `<stem>-0000i-of-0000N.<ext>`.
struct Naming {
    format: WeightFormat,
    stem: &'static str,
    ext: &'static str,
}

/// Safetensors first, as Hugging Face `from_pretrained` does.
const NAMINGS: [Naming; 2] = [
    Naming {
        format: WeightFormat::Safetensors,
        stem: "model",
        ext: "safetensors",
    },
    Naming {
        format: WeightFormat::PyTorch,
        stem: "pytorch_model",
        ext: "bin",
    },
];

/// A parsed shard index.
#[derive(Debug)]
pub(crate) struct ShardIndex {
    /// Tensor name -> shard file name.
    weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct IndexJson {
    weight_map: BTreeMap<String, String>,
}

/// The weight files of `dir`, in shard order, their format, and the index when there is one.
pub(crate) fn find_weights(
    dir: &Path,
) -> Result<(WeightFormat, Vec<PathBuf>, Option<ShardIndex>), CheckpointError> {
    for naming in &NAMINGS {
        let single = dir.join(format!("{}.{}", naming.stem, naming.ext));
        if single.is_file() {
            return Ok((naming.format, vec![single], None));
        }
        let index_path = dir.join(format!("{}.{}.index.json", naming.stem, naming.ext));
        if index_path.is_file() {
            let index = ShardIndex::read(&index_path)?;
            let mut files = Vec::new();
            for shard in index.shard_names() {
                let path = dir.join(shard);
                if !path.is_file() {
                    return Err(CheckpointError::MissingShard {
                        shard: shard.to_owned(),
                        by: index_path,
                    });
                }
                files.push(path);
            }
            return Ok((naming.format, files, Some(index)));
        }
        if let Some(files) = numbered_shards(dir, naming)? {
            return Ok((naming.format, files, None));
        }
    }
    Err(CheckpointError::NoWeights(dir.to_path_buf()))
}

impl ShardIndex {
    /// Reads and checks an index file.
    fn read(path: &Path) -> Result<ShardIndex, CheckpointError> {
        let bad = |reason: String| CheckpointError::BadIndex {
            index: path.to_path_buf(),
            reason,
        };
        let file = fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        let mut text = String::new();
        file.take(MAX_INDEX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| CheckpointError::io(path, e))?;
        if text.len() as u64 > MAX_INDEX_BYTES {
            return Err(bad(format!("larger than {MAX_INDEX_BYTES} bytes")));
        }
        let json: IndexJson = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if json.weight_map.is_empty() {
            return Err(bad("weight_map is empty".to_owned()));
        }
        for (tensor, shard) in &json.weight_map {
            if !is_plain_file_name(shard) {
                return Err(bad(format!(
                    "tensor {tensor} is mapped to {shard:?}, which is not a file name in the \
                     checkpoint directory"
                )));
            }
        }
        Ok(ShardIndex {
            weight_map: json.weight_map,
        })
    }

    /// The distinct shard file names, sorted.
    fn shard_names(&self) -> BTreeSet<&str> {
        self.weight_map.values().map(String::as_str).collect()
    }

    /// Checks that every tensor of the `weight_map` is in the shard it is mapped to;
    /// `found_in` maps each shard file name to the tensors read from it.
    pub(crate) fn check_against(
        &self,
        dir: &Path,
        found_in: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), CheckpointError> {
        let sets: BTreeMap<&str, BTreeSet<&str>> = found_in
            .iter()
            .map(|(shard, names)| (shard.as_str(), names.iter().map(String::as_str).collect()))
            .collect();
        for (tensor, shard) in &self.weight_map {
            let present = sets
                .get(shard.as_str())
                .is_some_and(|names| names.contains(tensor.as_str()));
            if !present {
                return Err(CheckpointError::TensorNotInShard {
                    tensor: tensor.clone(),
                    shard: dir.join(shard),
                });
            }
        }
        Ok(())
    }
}

/// Whether `name` names a file directly inside the checkpoint directory.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Parses `<stem>-<i>-of-<n>.<ext>` into `(i, n, digits of i)`.
fn parse_shard_name(name: &str, naming: &Naming) -> Option<(u64, u64, usize)> {
    let rest = name.strip_prefix(naming.stem)?.strip_prefix('-')?;
    let rest = rest.strip_suffix(naming.ext)?.strip_suffix('.')?;
    let (i, n) = rest.split_once("-of-")?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(i) || !all_digits(n) {
        return None;
    }
    Some((i.parse().ok()?, n.parse().ok()?, i.len()))
}

/// Shards named `<stem>-0000i-of-0000N.<ext>` without an index: all of `1..=N` must be there.
fn numbered_shards(dir: &Path, naming: &Naming) -> Result<Option<Vec<PathBuf>>, CheckpointError> {
    let entries = fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))?;
    // i -> (n, digits, path)
    let mut shards: BTreeMap<u64, (u64, usize, PathBuf)> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| CheckpointError::io(dir, e))?;
        let name = entry.file_name();
        let Some((i, n, digits)) = name.to_str().and_then(|s| parse_shard_name(s, naming)) else {
            continue;
        };
        shards.insert(i, (n, digits, entry.path()));
    }
    let Some((_, (n, digits, sibling))) = shards.first_key_value() else {
        return Ok(None);
    };
    let (n, digits, sibling) = (*n, *digits, sibling.clone());
    let mut files = Vec::new();
    for i in 1..=n {
        match shards.get(&i) {
            Some((m, _, path)) if *m == n => files.push(path.clone()),
            _ => {
                return Err(CheckpointError::MissingShard {
                    shard: format!(
                        "{}-{i:0digits$}-of-{n:0digits$}.{}",
                        naming.stem, naming.ext
                    ),
                    by: sibling,
                })
            }
        }
    }
    let stray = shards
        .iter()
        .find(|(&i, (m, _, _))| i == 0 || i > n || *m != n);
    if let Some((_, (_, _, path))) = stray {
        return Err(CheckpointError::BadShardSet {
            dir: dir.to_path_buf(),
            reason: format!("{} does not belong to a set of {n} shards", path.display()),
        });
    }
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_parse() {
        let n = &NAMINGS[1];
        assert_eq!(
            parse_shard_name("pytorch_model-00001-of-00007.bin", n),
            Some((1, 7, 5))
        );
        assert_eq!(parse_shard_name("pytorch_model.bin", n), None);
        assert_eq!(parse_shard_name("pytorch_model-1-of-x.bin", n), None);
        assert_eq!(
            parse_shard_name("model-00001-of-00002.safetensors", n),
            None
        );
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        assert!(!is_plain_file_name("../etc/passwd"));
        assert!(!is_plain_file_name(".."));
    }
}
