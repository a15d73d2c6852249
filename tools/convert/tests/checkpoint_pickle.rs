//! PyTorch `.bin` files built by hand: views with storage offsets and non-contiguous strides,
//! the opcodes of protocols 2 and 4, and hostile or broken archives.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use chatglm_convert::checkpoint::{Checkpoint, CheckpointError, DType};

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("checkpoint_pickle")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pickle written opcode by opcode.
struct Pickle {
    bytes: Vec<u8>,
    /// Protocol-4 spelling: SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE.
    proto4: bool,
    /// Memo slot of the `_rebuild_tensor_v2` global once stored (protocol 2 only).
    rebuild_memo: Option<u8>,
}

impl Pickle {
    fn new(proto4: bool) -> Pickle {
        let mut bytes = vec![0x80, if proto4 { 4 } else { 2 }];
        if proto4 {
            bytes.push(0x95); // FRAME with a length hint
            bytes.extend(0u64.to_le_bytes());
        }
        Pickle {
            bytes,
            proto4,
            rebuild_memo: None,
        }
    }

    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        if self.proto4 && s.len() < 256 {
            self.op(&[0x8c, s.len() as u8]);
        } else {
            self.op(b"X").op(&(s.len() as u32).to_le_bytes());
        }
        self.op(s.as_bytes())
    }

    fn int(&mut self, v: i64) -> &mut Self {
        match v {
            0..=0xff => self.op(&[b'K', v as u8]),
            0x100..=0xffff => self.op(b"M").op(&(v as u16).to_le_bytes()),
            _ if i32::try_from(v).is_ok() => self.op(b"J").op(&(v as i32).to_le_bytes()),
            _ => self.op(&[0x8a, 8]).op(&v.to_le_bytes()),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        if self.proto4 {
            self.str(module).str(name).op(&[0x93, 0x94])
        } else {
            self.op(b"c")
                .op(module.as_bytes())
                .op(b"\n")
                .op(name.as_bytes())
                .op(b"\n")
        }
    }

    fn ints(&mut self, v: &[i64]) -> &mut Self {
        match v.len() {
            0 => self.op(b")"),
            1..=3 => {
                for &x in v {
                    self.int(x);
                }
                self.op(&[0x84 + v.len() as u8])
            }
            _ => {
                self.op(b"(");
                for &x in v {
                    self.int(x);
                }
                self.op(b"t")
            }
        }
    }

    fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict").op(b")R")
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, view: &View) -> &mut Self {
        match self.rebuild_memo {
            Some(slot) if !self.proto4 => {
                self.op(&[b'h', slot]);
            }
            _ => {
                self.global("torch._utils", "_rebuild_tensor_v2");
                if !self.proto4 {
                    self.op(&[b'q', 200]);
                    self.rebuild_memo = Some(200);
                }
            }
        }
        self.op(b"(") // arguments
            .op(b"(") // persistent id
            .str("storage")
            .global("torch", view.storage_type)
            .str(view.key)
            .str("cpu")
            .int(view.numel)
            .op(b"tQ")
            .int(view.offset)
            .ints(view.size)
            .ints(view.stride)
            .op(&[0x89])
            .ordered_dict()
            .op(b"tR")
    }

    /// `_rebuild_parameter(tensor, True, OrderedDict())`.
    fn parameter(&mut self, view: &View) -> &mut Self {
        self.global("torch._utils", "_rebuild_parameter")
            .op(b"(")
            .tensor(view)
            .op(&[0x88])
            .ordered_dict()
            .op(b"tR")
    }

    /// `OrderedDict` of `views` (a parameter when the flag is set), then STOP.
    fn state_dict(mut self, views: &[(&str, View, bool)]) -> Vec<u8> {
        self.ordered_dict().op(b"q\x01(");
        for (name, view, parameter) in views {
            self.str(name);
            if *parameter {
                self.parameter(view);
            } else {
                self.tensor(view);
            }
        }
        self.op(b"u.");
        self.bytes
    }
}

struct View {
    storage_type: &'static str,
    key: &'static str,
    numel: i64,
    offset: i64,
    size: &'static [i64],
    stride: &'static [i64],
}

/// Writes a `torch.save`-style zip: `<stem>/data.pkl`, `<stem>/data/<key>` entries.
fn write_bin(path: &Path, stem: &str, pickle: &[u8], storages: &[(&str, Vec<u8>)]) {
    write_bin_with_order(path, stem, pickle, storages, b"little");
}

fn write_bin_with_order(
    path: &Path,
    stem: &str,
    pickle: &[u8],
    storages: &[(&str, Vec<u8>)],
    byteorder: &[u8],
) {
    let mut w = zip::ZipWriter::new(File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file(format!("{stem}/data.pkl"), opts).unwrap();
    w.write_all(pickle).unwrap();
    w.start_file(format!("{stem}/byteorder"), opts).unwrap();
    w.write_all(byteorder).unwrap();
    for (key, bytes) in storages {
        w.start_file(format!("{stem}/data/{key}"), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.start_file(format!("{stem}/version"), opts).unwrap();
    w.write_all(b"3\n").unwrap();
    w.finish().unwrap();
}

/// Storage "0": 24 f32; "1": 8 f16; "2": 3 bf16.
fn storage_values() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let s0: Vec<f32> = (0..24).map(|k| k as f32 * 1.5 - 3.0).collect();
    let s1: Vec<f32> = (0..8).map(|k| k as f32 * 0.25 - 0.5).collect();
    let s2 = vec![1.0f32, -2.5, 3.140625];
    (s0, s1, s2)
}

fn storages() -> Vec<(&'static str, Vec<u8>)> {
    let (s0, s1, s2) = storage_values();
    vec![
        ("0", s0.iter().flat_map(|v| v.to_le_bytes()).collect()),
        (
            "1",
            s1.iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        (
            "2",
            s2.iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        ),
    ]
}

const F32: &str = "FloatStorage";

fn views() -> Vec<(&'static str, View, bool)> {
    let v = |storage_type, key, numel, offset, size, stride| View {
        storage_type,
        key,
        numel,
        offset,
        size,
        stride,
    };
    vec![
        // Transposed view with an offset: t[i][j] = s0[2 + i + 3j].
        ("t", v(F32, "0", 24, 2, &[3, 4], &[1, 3]), false),
        // Contiguous view with an offset: s0[5..11].
        ("u", v(F32, "0", 24, 5, &[2, 3], &[3, 1]), false),
        // Strided f16: h[i][j] = s1[1 + 4i + 2j].
        ("h", v("HalfStorage", "1", 8, 1, &[2, 2], &[4, 2]), false),
        ("b", v("BFloat16Storage", "2", 3, 0, &[3], &[1]), false),
        // A parameter over the whole f32 storage.
        ("p", v(F32, "0", 24, 0, &[24], &[1]), true),
        // A scalar.
        ("s", v(F32, "0", 24, 3, &[], &[]), false),
        // Empty.
        ("e", v(F32, "0", 24, 0, &[0, 4], &[4, 1]), false),
        // Broadcast rows (stride 0): x[i][j] = s0[j].
        ("x", v(F32, "0", 24, 0, &[2, 3], &[0, 1]), false),
        // Four dimensions (TUPLE with MARK), permuted.
        (
            "q",
            v(F32, "0", 24, 0, &[2, 1, 3, 4], &[1, 24, 8, 2]),
            false,
        ),
    ]
}

fn check_views(ckpt: &Checkpoint) {
    let (s0, s1, s2) = storage_values();
    let names: Vec<&str> = ckpt.tensors().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["b", "e", "h", "p", "q", "s", "t", "u", "x"]);

    let t: Vec<f32> = (0..3)
        .flat_map(|i| (0..4).map(move |j| (i, j)))
        .map(|(i, j)| s0[2 + i + 3 * j])
        .collect();
    assert_eq!(ckpt.read_f32("t").unwrap(), t);
    assert_eq!(ckpt.get("t").unwrap().shape, [3, 4]);
    assert_eq!(ckpt.read_f32("u").unwrap(), &s0[5..11]);
    assert_eq!(ckpt.read_f32("h").unwrap(), [s1[1], s1[3], s1[5], s1[7]]);
    assert_eq!(ckpt.get("h").unwrap().dtype, DType::F16);
    assert_eq!(ckpt.read_f32("b").unwrap(), s2);
    assert_eq!(ckpt.get("b").unwrap().dtype, DType::BF16);
    assert_eq!(ckpt.read_f32("p").unwrap(), s0);
    assert_eq!(ckpt.read_f32("s").unwrap(), [s0[3]]);
    assert_eq!(ckpt.get("s").unwrap().shape, Vec::<usize>::new());
    assert_eq!(ckpt.read_f32("e").unwrap(), Vec::<f32>::new());
    assert_eq!(
        ckpt.read_f32("x").unwrap(),
        [s0[0], s0[1], s0[2], s0[0], s0[1], s0[2]]
    );
    let mut q = Vec::new();
    for a in 0..2 {
        for c in 0..3 {
            for d in 0..4 {
                q.push(s0[a + 8 * c + 2 * d]);
            }
        }
    }
    assert_eq!(ckpt.read_f32("q").unwrap(), q);
}

#[test]
fn views_protocol_2() {
    let dir = scratch("views2");
    let pickle = Pickle::new(false).state_dict(&views());
    // The stem differs from the file name: it must be found, not assumed.
    write_bin(
        &dir.join("pytorch_model.bin"),
        "archive",
        &pickle,
        &storages(),
    );
    check_views(&Checkpoint::open(&dir).unwrap());
}

#[test]
fn views_protocol_4() {
    let dir = scratch("views4");
    let pickle = Pickle::new(true).state_dict(&views());
    write_bin(&dir.join("pytorch_model.bin"), "x", &pickle, &storages());
    check_views(&Checkpoint::open(&dir).unwrap());
}

fn one_view(view: View) -> Vec<u8> {
    Pickle::new(false).state_dict(&[("w", view, false)])
}

#[test]
fn view_past_its_storage_is_refused() {
    let dir = scratch("past");
    let pickle = one_view(View {
        storage_type: F32,
        key: "0",
        numel: 24,
        offset: 20,
        size: &[3, 4],
        stride: &[1, 3],
    });
    write_bin(&dir.join("pytorch_model.bin"), "a", &pickle, &storages());
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::BadTensor { tensor, reason, .. } => {
            assert_eq!(tensor, "w");
            assert!(reason.contains("past the end of storage"), "{reason}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn storage_shorter_than_its_numel_is_refused() {
    let dir = scratch("short");
    let pickle = one_view(View {
        storage_type: F32,
        key: "0",
        numel: 25,
        offset: 0,
        size: &[25],
        stride: &[1],
    });
    write_bin(&dir.join("pytorch_model.bin"), "a", &pickle, &storages());
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::BadTensor { tensor, reason, .. } => {
            assert_eq!(tensor, "w");
            assert!(reason.contains("96 bytes"), "{reason}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn missing_storage_entry_is_refused() {
    let dir = scratch("nostorage");
    let pickle = one_view(View {
        storage_type: F32,
        key: "9",
        numel: 4,
        offset: 0,
        size: &[4],
        stride: &[1],
    });
    write_bin(&dir.join("pytorch_model.bin"), "a", &pickle, &storages());
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::BadTensor { tensor, reason, .. } => {
            assert_eq!(tensor, "w");
            assert!(reason.contains("a/data/9"), "{reason}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn unknown_globals_are_refused() {
    for (proto4, module, name) in [
        (false, "os", "system"),
        (true, "builtins", "eval"),
        (false, "torch", "DoubleStorage"),
        (false, "torch._utils", "_rebuild_qtensor"),
    ] {
        let dir = scratch(&format!("global_{name}"));
        let mut p = Pickle::new(proto4);
        p.ordered_dict()
            .op(b"(")
            .str("w")
            .global(module, name)
            .op(b")R")
            .op(b"u.");
        write_bin(&dir.join("pytorch_model.bin"), "a", &p.bytes, &storages());
        match Checkpoint::open(&dir).unwrap_err() {
            CheckpointError::ForbiddenGlobal {
                module: m, name: n, ..
            } => assert_eq!((m.as_str(), n.as_str()), (module, name)),
            e => panic!("{e}"),
        }
    }
}

#[test]
fn malformed_pickles_are_refused_with_their_offset() {
    let dir = scratch("malformed");
    // A truncated pickle: the last view is cut in the middle.
    let full = Pickle::new(false).state_dict(&views());
    let cut = &full[..full.len() - 20];
    write_bin(&dir.join("pytorch_model.bin"), "a", cut, &storages());
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::Pickle { offset, reason, .. } => {
            assert!(offset <= cut.len(), "{offset}");
            assert!(!reason.is_empty());
        }
        e => panic!("{e}"),
    }
    // A state-dict value that is not a tensor.
    let mut p = Pickle::new(false);
    p.op(b"}q\x01(").str("w").int(7).op(b"u.");
    write_bin(&dir.join("pytorch_model.bin"), "a", &p.bytes, &storages());
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::Pickle { reason, .. } => {
            assert!(reason.contains("w is of type int"), "{reason}")
        }
        e => panic!("{e}"),
    }
}

#[test]
fn broken_archives_are_refused() {
    let dir = scratch("archives");
    let bin = dir.join("pytorch_model.bin");
    fs::write(&bin, b"\x80\x02}q\x00.").unwrap(); // legacy (non-zip) torch.save
    assert!(matches!(
        Checkpoint::open(&dir).unwrap_err(),
        CheckpointError::Zip { reason, .. } if reason.contains("legacy")
    ));

    // No data.pkl.
    let mut w = zip::ZipWriter::new(File::create(&bin).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("a/data/0", opts).unwrap();
    w.write_all(&[0; 16]).unwrap();
    w.finish().unwrap();
    assert!(matches!(
        Checkpoint::open(&dir).unwrap_err(),
        CheckpointError::Zip { reason, .. } if reason.contains("data.pkl")
    ));

    let pickle = one_view(View {
        storage_type: F32,
        key: "0",
        numel: 24,
        offset: 0,
        size: &[24],
        stride: &[1],
    });
    // Big-endian storages.
    write_bin_with_order(&bin, "a", &pickle, &storages(), b"big");
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::Zip { reason, .. } => assert!(reason.contains("big-endian"), "{reason}"),
        e => panic!("{e}"),
    }

    // A compressed entry: mark every entry as deflated (method 8) in the local and central
    // headers.
    write_bin(&bin, "a", &pickle, &storages());
    let mut bytes = fs::read(&bin).unwrap();
    for i in 0..bytes.len() - 4 {
        match &bytes[i..i + 4] {
            b"PK\x03\x04" => bytes[i + 8] = 8,
            b"PK\x01\x02" => bytes[i + 10] = 8,
            _ => {}
        }
    }
    fs::write(&bin, &bytes).unwrap();
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::Zip { reason, .. } => assert!(reason.contains("compressed"), "{reason}"),
        e => panic!("{e}"),
    }
}

/// Peak resident memory of this process, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Opening reads no tensor data and reading holds one tensor: a 256 MiB storage read as four
/// 64 Mi-element views never raises the peak by much more than one f32 result (256 MiB).
/// Ignored by default because it writes 256 MiB and the peak is per process: run alone with
/// `cargo test -p chatglm-convert --test checkpoint_pickle -- --ignored --test-threads=1`.
#[test]
#[ignore]
fn streaming_keeps_one_tensor_in_memory() {
    const QUARTER: i64 = 1 << 25; // elements per view
    let dir = scratch("streaming");
    let bin = dir.join("pytorch_model.bin");
    {
        let views: Vec<(&str, View, bool)> = ["a", "b", "c", "d"]
            .iter()
            .zip([0, QUARTER, 2 * QUARTER, 3 * QUARTER])
            .map(|(&name, offset)| {
                let view = View {
                    storage_type: "HalfStorage",
                    key: "0",
                    numel: 4 * QUARTER,
                    offset,
                    size: &[1 << 13, 1 << 12],
                    stride: &[1 << 12, 1],
                };
                (name, view, false)
            })
            .collect();
        let pickle = Pickle::new(false).state_dict(&views);
        // Written in 1 MiB pieces, so that building the file does not raise the peak.
        let mut w = zip::ZipWriter::new(File::create(&bin).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        w.start_file("big/data.pkl", opts).unwrap();
        w.write_all(&pickle).unwrap();
        w.start_file("big/data/0", opts).unwrap();
        let piece: Vec<u8> = (0..1 << 19)
            .flat_map(|k| half::f16::from_f32((k % 2048) as f32).to_le_bytes())
            .collect();
        for _ in 0..(8 * QUARTER) >> 20 {
            w.write_all(&piece).unwrap();
        }
        w.finish().unwrap();
    }
    let Some(before) = peak_rss() else { return };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let after_open = peak_rss().unwrap();
    assert!(
        after_open - before < 8 << 20,
        "open raised the peak by {}",
        after_open - before
    );
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let v = ckpt.read_f32(name).unwrap();
        let first = (i as i64 * QUARTER) % 2048;
        assert_eq!(v[0], first as f32);
        assert_eq!(v[4097], ((first + 4097) % 2048) as f32);
        assert_eq!(v.len(), QUARTER as usize);
    }
    let after_read = peak_rss().unwrap();
    let one_tensor = (QUARTER as u64) * 4;
    eprintln!(
        "peak before {before}, after open {after_open}, after reads {after_read}; one tensor \
         {one_tensor}"
    );
    assert!(
        after_read - before < one_tensor + (16 << 20),
        "reading raised the peak by {} for a {one_tensor}-byte tensor",
        after_read - before
    );
    fs::remove_dir_all(&dir).unwrap();
}
