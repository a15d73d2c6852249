//! Property test: random mutations of valid GGUF files never make the reader panic; it
//! returns `Ok` or `Err`, and whatever it accepts can be walked safely.

mod gguf_common;

/// Named so that `cargo test -p chatglm gguf` selects these tests.
mod gguf_proptest {

    use crate::gguf_common::*;
    use chatglm::gguf::GgufFile;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// The files to mutate: the full sample (alignment 64) and the small one (default alignment).
    fn samples() -> &'static [(Vec<u8>, usize)] {
        static SAMPLES: OnceLock<Vec<(Vec<u8>, usize)>> = OnceLock::new();
        SAMPLES.get_or_init(|| {
            [
                write_to_vec(&full_metadata(Some(64)), &full_tensors()),
                write_to_vec(&small_metadata(), &small_tensors()),
            ]
            .into_iter()
            .map(|file| {
                let data_offset = GgufFile::from_bytes(file.clone())
                    .expect("sample is valid")
                    .data_offset() as usize;
                (file, data_offset)
            })
            .collect()
        })
    }

    /// One edit of a file. Positions are fractions of the region they apply to, so one strategy
    /// serves files of any size.
    #[derive(Debug, Clone)]
    enum Edit {
        /// Overwrite one byte anywhere before the data section.
        HeaderByte(f64, u8),
        /// Overwrite one byte anywhere.
        AnyByte(f64, u8),
        /// Overwrite 8 bytes before the data section with a value that stresses counts,
        /// lengths and offsets.
        HeaderU64(f64, u64),
        /// Overwrite 4 bytes before the data section (type ids, dimension counts).
        HeaderU32(f64, u32),
        /// Cut the file.
        Truncate(f64),
        /// Remove a few bytes before the data section (shifts every later field).
        Delete(f64, usize),
        /// Insert bytes before the data section.
        Insert(f64, Vec<u8>),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let frac = 0.0..1.0f64;
        let interesting_u64 = prop_oneof![
            Just(0u64),
            Just(1),
            Just(u64::MAX),
            Just(u64::MAX / 2 + 1),
            Just(u32::MAX as u64),
            Just(1 << 32),
            Just(16 << 20),
            0u64..4096,
            any::<u64>(),
        ];
        let interesting_u32 = prop_oneof![
            Just(0u32),
            Just(5),
            Just(9),
            Just(13),
            Just(u32::MAX),
            0u32..40
        ];
        prop_oneof![
            4 => (frac.clone(), any::<u8>()).prop_map(|(p, b)| Edit::HeaderByte(p, b)),
            1 => (frac.clone(), any::<u8>()).prop_map(|(p, b)| Edit::AnyByte(p, b)),
            3 => (frac.clone(), interesting_u64).prop_map(|(p, v)| Edit::HeaderU64(p, v)),
            2 => (frac.clone(), interesting_u32).prop_map(|(p, v)| Edit::HeaderU32(p, v)),
            1 => frac.clone().prop_map(Edit::Truncate),
            1 => (frac.clone(), 1usize..9).prop_map(|(p, n)| Edit::Delete(p, n)),
            1 => (frac, prop::collection::vec(any::<u8>(), 1..9)).prop_map(|(p, b)| Edit::Insert(p, b)),
        ]
    }

    /// Applies `e` to `file` whose data section starts at `data_offset`.
    fn apply(file: &mut Vec<u8>, data_offset: usize, e: &Edit) {
        let at = |frac: f64, region: usize| {
            ((frac * region as f64) as usize).min(region.saturating_sub(1))
        };
        let head = data_offset.min(file.len());
        match e {
            Edit::HeaderByte(p, b) if head > 0 => file[at(*p, head)] = *b,
            Edit::AnyByte(p, b) if !file.is_empty() => {
                let i = at(*p, file.len());
                file[i] = *b;
            }
            Edit::HeaderU64(p, v) if head >= 8 => {
                let i = at(*p, head - 7);
                file[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            Edit::HeaderU32(p, v) if head >= 4 => {
                let i = at(*p, head - 3);
                file[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            Edit::Truncate(p) => file.truncate(at(*p, file.len() + 1)),
            Edit::Delete(p, n) if head > 0 => {
                let i = at(*p, head);
                let end = (i + n).min(file.len());
                file.drain(i..end);
            }
            Edit::Insert(p, bytes) => {
                let i = at(*p, head + 1);
                file.splice(i..i, bytes.iter().copied());
            }
            _ => {}
        }
    }

    /// Uses everything a parsed file offers, so that a bad value that slipped through would
    /// surface as a panic here.
    fn walk(f: &GgufFile) {
        let total = f.as_bytes().len() as u64;
        assert!(f.data_offset() <= total);
        for t in f.tensors() {
            let data = f.tensor_data(t);
            assert_eq!(data.len() as u64, t.size_bytes, "{}", t.name);
            assert!(f.data_offset() + t.offset + t.size_bytes <= total);
            assert_eq!(t.offset % f.alignment(), 0);
            assert_eq!(t.ty.bytes_for(t.n_elements()), Some(t.size_bytes));
            assert!(f.tensor(&t.name).is_some());
        }
        for (key, _) in f.metadata().iter() {
            let _ = f.get_u32(key);
            let _ = f.get_u64(key);
            let _ = f.get_i32(key);
            let _ = f.get_f32(key);
            let _ = f.get_bool(key);
            let _ = f.get_str(key);
            let _ = f.get_str_array(key);
            let _ = f.get_f32_array(key);
            let _ = f.get_i32_array(key);
            let _ = f.get_u8_array(key);
            if let Ok(a) = f.get_array(key) {
                assert!(a.depth() <= chatglm::gguf::MAX_ARRAY_DEPTH);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn mutated_files_never_panic(
            which in 0usize..2,
            edits in prop::collection::vec(edit(), 1..6),
        ) {
            let (file, data_offset) = &samples()[which];
            let mut bytes = file.clone();
            for e in &edits {
                apply(&mut bytes, *data_offset, e);
            }
            match GgufFile::from_bytes(bytes) {
                Ok(f) => walk(&f),
                Err(e) => {
                    // Every error renders a message.
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }

        #[test]
        fn random_bytes_after_a_valid_header_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..512),
            n_tensors in 0u64..4,
            n_kv in 0u64..4,
        ) {
            let mut bytes = b"GGUF".to_vec();
            bytes.extend_from_slice(&3u32.to_le_bytes());
            bytes.extend_from_slice(&n_tensors.to_le_bytes());
            bytes.extend_from_slice(&n_kv.to_le_bytes());
            bytes.extend_from_slice(&tail);
            if let Ok(f) = GgufFile::from_bytes(bytes) {
                walk(&f);
            }
        }
    }
}
