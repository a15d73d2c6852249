//! GGUF writer: exact bytes of a tiny file, round trips of every value and tensor type
//! through `from_bytes` and `open` (mmap), and every misuse of the streaming interface.

mod gguf_common;

/// Named so that `cargo test -p chatglm gguf` selects these tests.
mod gguf_writer {

    use crate::gguf_common::*;
    use chatglm::gguf::{
        Array, GgufError, GgufFile, GgufWriter, Metadata, TensorDesc, TensorInfo, Value,
        MAX_WRITTEN_TENSOR_NAME_LEN,
    };
    use chatglm_kernels::GgmlType;

    /// The writer's bytes for a one-key, one-tensor file, spelled out field by field from the
    /// GGUF spec (not from the reader), so that reader and writer cannot agree on a wrong format.
    #[test]
    fn exact_bytes_of_a_tiny_file() {
        let mut md = Metadata::new();
        md.push_u32("a.b", 7).unwrap();
        let mut w = GgufWriter::new(
            Vec::new(),
            &md,
            &[TensorDesc::new("t", &[2], GgmlType::F32)],
        )
        .unwrap();
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor("t", &data).unwrap();
        let file = w.finish().unwrap();

        let mut expected: Vec<u8> = Vec::new();
        expected.extend_from_slice(b"GGUF");
        expected.extend_from_slice(&[3, 0, 0, 0]); // version
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // tensor count
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // kv count
        expected.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]); // key length
        expected.extend_from_slice(b"a.b");
        expected.extend_from_slice(&[4, 0, 0, 0]); // value type u32
        expected.extend_from_slice(&[7, 0, 0, 0]); // value
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // name length
        expected.extend_from_slice(b"t");
        expected.extend_from_slice(&[1, 0, 0, 0]); // n_dims
        expected.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]); // dims[0]
        expected.extend_from_slice(&[0, 0, 0, 0]); // type F32
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // offset
        assert_eq!(expected.len(), 76);
        expected.resize(96, 0); // padding to the default alignment 32
        expected.extend_from_slice(&[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40]);
        expected.resize(128, 0); // padding after the tensor
        assert_eq!(file, expected);

        let f = GgufFile::from_bytes(file).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 32);
        assert_eq!(f.data_offset(), 96);
        assert_eq!(f.get_u32("a.b").unwrap(), 7);
        assert_eq!(f.tensor_data(&f.tensors()[0]), &data[..]);
    }

    /// Writes the full sample (chunked for some tensors), returns the file and the writer's
    /// view of the tensors.
    fn write_full(
        alignment: Option<u32>,
    ) -> (Metadata, Vec<SampleTensor>, Vec<u8>, Vec<TensorInfo>) {
        let md = full_metadata(alignment);
        let tensors = full_tensors();
        let descs: Vec<TensorDesc> = tensors.iter().map(|t| t.desc.clone()).collect();
        let mut w = GgufWriter::new(Vec::new(), &md, &descs).unwrap();
        let infos = w.tensors().to_vec();
        for (i, t) in tensors.iter().enumerate() {
            if i % 2 == 0 {
                w.write_tensor(&t.desc.name, &t.data).unwrap();
            } else {
                w.begin_tensor(&t.desc.name).unwrap();
                for chunk in t.data.chunks(7) {
                    w.write_chunk(chunk).unwrap();
                }
                if t.data.is_empty() {
                    // A zero-byte tensor is complete once begun; a further empty chunk is an error.
                    assert!(matches!(
                        w.write_chunk(&[]),
                        Err(GgufError::WriteOrder { .. })
                    ));
                }
            }
        }
        (md, tensors, w.finish().unwrap(), infos)
    }

    /// Checks everything a reader sees against what was written.
    fn check_round_trip(
        f: &GgufFile,
        md: &Metadata,
        tensors: &[SampleTensor],
        infos: &[TensorInfo],
        alignment: u64,
    ) {
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), alignment);
        assert_eq!(f.data_offset() % alignment, 0);
        assert_eq!(f.as_bytes().len() as u64 % alignment, 0);

        // Metadata: same entries in the same order.
        assert_eq!(f.metadata().len(), md.len());
        for ((k1, v1), (k2, v2)) in f.metadata().iter().zip(md.iter()) {
            assert_eq!(k1, k2);
            assert_eq!(v1, v2, "value of {k1}");
        }
        // Float bits survive (PartialEq would accept 0.0 for -0.0).
        match f.get("test.arr.f32") {
            Some(Value::Array(Array::F32(v))) => {
                assert_eq!(v[1].to_bits(), (-0.0f32).to_bits());
                assert_eq!(v[4], f32::INFINITY);
            }
            other => panic!("test.arr.f32 is {other:?}"),
        }

        // Tensors: descriptors, offsets and bytes.
        assert_eq!(f.tensors(), infos);
        for (t, info) in tensors.iter().zip(f.tensors()) {
            assert_eq!(info.name, t.desc.name);
            assert_eq!(info.dims, t.desc.dims);
            assert_eq!(info.ty, t.desc.ty);
            assert_eq!(info.size_bytes as usize, t.data.len());
            assert_eq!(info.offset % alignment, 0, "{}", info.name);
            assert_eq!(f.tensor_data(info), &t.data[..], "{}", info.name);
            assert_eq!(f.tensor(&t.desc.name), Some(info));
            let (info2, data2) = f.require_tensor(&t.desc.name).unwrap();
            assert_eq!((info2, data2), (info, &t.data[..]));
        }
        // Tensors are packed: each starts at the first aligned offset after the previous one.
        let mut next = 0u64;
        for info in f.tensors() {
            assert_eq!(info.offset, next, "{}", info.name);
            next = (info.offset + info.size_bytes).div_ceil(alignment) * alignment;
        }
        assert_eq!(f.data_offset() + next, f.as_bytes().len() as u64);
        assert!(f.tensor("nope").is_none());
        assert!(matches!(
            f.require_tensor("nope"),
            Err(GgufError::MissingTensor { name }) if name == "nope"
        ));
    }

    #[test]
    fn round_trip_through_bytes_and_mmap() {
        for alignment in [None, Some(8), Some(64), Some(1), Some(4096)] {
            let (md, tensors, file, infos) = write_full(alignment);
            let align = u64::from(alignment.unwrap_or(32));

            let f = GgufFile::from_bytes(file.clone()).unwrap();
            assert!(!f.is_mapped());
            check_round_trip(&f, &md, &tensors, &infos, align);

            let path = TempPath::new("roundtrip");
            std::fs::write(&path.0, &file).unwrap();
            let g = GgufFile::open(&path.0).unwrap();
            assert!(g.is_mapped());
            check_round_trip(&g, &md, &tensors, &infos, align);

            // Writing what was read gives the same bytes.
            let descs: Vec<TensorDesc> = g
                .tensors()
                .iter()
                .map(|t| TensorDesc::new(t.name.clone(), &t.dims, t.ty))
                .collect();
            let mut w = GgufWriter::new(Vec::new(), g.metadata(), &descs).unwrap();
            for t in g.tensors() {
                w.write_tensor(&t.name, g.tensor_data(t)).unwrap();
            }
            assert_eq!(w.finish().unwrap(), file);
        }
    }

    #[test]
    fn typed_getters() {
        let (_, _, file, _) = write_full(Some(64));
        let f = GgufFile::from_bytes(file).unwrap();

        assert_eq!(f.get_str("general.architecture").unwrap(), "chatglm");
        assert_eq!(f.get_str("test.empty_string").unwrap(), "");
        assert_eq!(f.get_str("test.unicode").unwrap(), "问：你好 ▁ 😀 \u{0}");
        assert_eq!(f.get_str("测试.ключ").unwrap(), "unicode key");
        assert_eq!(f.get_u32("general.alignment").unwrap(), 64);
        // Integer getters accept any integer type whose value fits.
        assert_eq!(f.get_u32("test.u8").unwrap(), 0xfe);
        assert_eq!(f.get_u64("test.u16").unwrap(), 65_535);
        assert_eq!(f.get_u64("test.u64").unwrap(), u64::MAX);
        assert_eq!(f.get_i32("test.i16").unwrap(), -12_345);
        assert_eq!(f.get_i64("test.i64").unwrap(), i64::MIN);
        assert_eq!(f.get_i64("test.u32").unwrap(), 4_000_000_000);
        assert_eq!(f.get_u32("test.value").unwrap(), 7);
        assert_eq!(f.get_f32("test.f32").unwrap(), -1.5e-7);
        assert_eq!(f.get_f32("test.f64").unwrap(), std::f32::consts::PI);
        assert!(f.get_bool("test.bool_true").unwrap());
        assert!(!f.get_bool("test.bool_false").unwrap());
        assert_eq!(
            f.get_str_array("test.arr.string").unwrap(),
            ["a", "", "▁tok", "<0x0A>"]
        );
        assert_eq!(
            f.get_i32_array("test.arr.i32").unwrap(),
            [1, -2, 3, i32::MIN]
        );
        assert_eq!(f.get_f32_array("test.arr.f32").unwrap()[2], 1.25);
        assert_eq!(&*f.get_u8_array("test.arr.u8").unwrap(), &[0, 1, 255]);
        assert_eq!(
            &*f.get_u8_array("test.arr.i8").unwrap(),
            &[0xff, 0, 0x7f, 0x80]
        );
        assert!(f.get_str_array("test.arr.empty_string").unwrap().is_empty());
        assert_eq!(f.get_array("test.arr.nested").unwrap().depth(), 4);
        assert_eq!(f.get_array("test.arr.empty_array").unwrap().depth(), 1);

        // Errors name the key and the types.
        let e = f.get_u32("test.i8").unwrap_err();
        assert!(
            matches!(&e, GgufError::OutOfRange { key, .. } if key == "test.i8"),
            "{e}"
        );
        assert!(
            e.to_string().contains("test.i8") && e.to_string().contains("-128"),
            "{e}"
        );
        let e = f.get_u32("test.u64").unwrap_err();
        assert!(
            matches!(&e, GgufError::OutOfRange { key, expected: "u32", .. } if key == "test.u64")
        );
        let e = f.get_i64("test.u64").unwrap_err();
        assert!(matches!(&e, GgufError::OutOfRange { .. }), "{e}");
        let e = f.get_u32("test.string").unwrap_err();
        assert!(
            matches!(&e, GgufError::TypeMismatch { key, found, .. } if key == "test.string" && found == "string"),
            "{e}"
        );
        let e = f.get_str("test.u32").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata key \"test.u32\": expected string, found u32"
        );
        let e = f.get_f32_array("test.arr.i32").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata key \"test.arr.i32\": expected array of f32, found array of i32"
        );
        assert!(matches!(
            f.get_bool("test.u8"),
            Err(GgufError::TypeMismatch { .. })
        ));
        assert!(matches!(
            f.get_f32("test.i32"),
            Err(GgufError::TypeMismatch { .. })
        ));
        assert!(matches!(
            f.get_u8_array("test.arr.u16"),
            Err(GgufError::TypeMismatch { .. })
        ));
        let e = f.get_u32("no.such.key").unwrap_err();
        assert!(matches!(&e, GgufError::MissingKey { key } if key == "no.such.key"));
        assert_eq!(e.to_string(), "metadata key \"no.such.key\" is missing");
        assert!(f.get("no.such.key").is_none());
        assert_eq!(f.get("test.value"), Some(&Value::U16(7)));
    }

    #[test]
    fn metadata_rejects_duplicate_keys() {
        let mut md = Metadata::new();
        md.push_u32("k", 1).unwrap();
        let e = md.push_str("k", "again").unwrap_err();
        assert!(matches!(&e, GgufError::DuplicateKey { key } if key == "k"));
        assert_eq!(md.len(), 1);
    }

    #[test]
    fn default_alignment_is_32() {
        let file = write_to_vec(&small_metadata(), &small_tensors());
        let f = GgufFile::from_bytes(file).unwrap();
        assert_eq!(f.alignment(), 32);
        assert!(f.get("general.alignment").is_none());
        assert!(f.tensors().iter().all(|t| t.offset % 32 == 0));
    }

    #[test]
    fn file_without_tensors() {
        let mut md = Metadata::new();
        md.push_str("general.architecture", "chatglm").unwrap();
        let w = GgufWriter::new(Vec::new(), &md, &[]).unwrap();
        let file = w.finish().unwrap();
        assert_eq!(file.len() % 32, 0);
        let f = GgufFile::from_bytes(file.clone()).unwrap();
        assert!(f.tensors().is_empty());
        // A writer that leaves out the final padding of a tensor-less file is tolerated.
        let unpadded = &file[..24 + 8 + "general.architecture".len() + 4 + 8 + "chatglm".len()];
        let g = GgufFile::from_bytes(unpadded.to_vec()).unwrap();
        assert_eq!(g.get_str("general.architecture").unwrap(), "chatglm");
    }

    #[test]
    fn open_reports_the_path() {
        let path = TempPath::new("missing");
        let e = GgufFile::open(&path.0).unwrap_err();
        assert!(matches!(&e, GgufError::Io { path: p, .. } if *p == path.0));
        assert!(e.to_string().contains(&*path.0.to_string_lossy()), "{e}");

        // An empty file maps to an empty slice and fails on the magic.
        std::fs::write(&path.0, b"").unwrap();
        let e = GgufFile::open(&path.0).unwrap_err();
        assert!(
            matches!(&e, GgufError::Truncated { what, offset: 0, .. } if what == "magic"),
            "{e}"
        );
    }

    fn writer_for(tensors: &[TensorDesc]) -> Result<GgufWriter<Vec<u8>>, GgufError> {
        GgufWriter::new(Vec::new(), &small_metadata(), tensors)
    }

    #[test]
    fn writer_refuses_bad_declarations() {
        let q = |name: &str, dims: &[u64]| TensorDesc::new(name, dims, GgmlType::Q4_0);

        let e = writer_for(&[q("a", &[32]), q("a", &[64])]).unwrap_err();
        assert!(
            matches!(&e, GgufError::DuplicateTensor { name } if name == "a"),
            "{e}"
        );

        let e = writer_for(&[q("z", &[])]).unwrap_err();
        assert!(matches!(&e, GgufError::BadDimCount { tensor, n_dims: 0 } if tensor == "z"));
        let e = writer_for(&[q("z", &[32, 1, 1, 1, 1])]).unwrap_err();
        assert!(matches!(&e, GgufError::BadDimCount { n_dims: 5, .. }));

        let e = writer_for(&[q("odd", &[48, 2])]).unwrap_err();
        assert!(
            matches!(&e, GgufError::RowNotBlockMultiple { tensor, row_len: 48, block: 32, .. } if tensor == "odd"),
            "{e}"
        );

        let e =
            writer_for(&[TensorDesc::new("big", &[1 << 32, 1 << 32], GgmlType::F32)]).unwrap_err();
        assert!(matches!(&e, GgufError::ElementCountOverflow { tensor, .. } if tensor == "big"));
        // 2^62 f32 elements fit in i64 but their 2^64 bytes do not fit in u64.
        let e = writer_for(&[TensorDesc::new("bytes", &[1 << 31, 1 << 31], GgmlType::F32)])
            .unwrap_err();
        assert!(matches!(&e, GgufError::ElementCountOverflow { .. }), "{e}");

        let long = "x".repeat(MAX_WRITTEN_TENSOR_NAME_LEN + 1);
        let e = writer_for(&[q(&long, &[32])]).unwrap_err();
        assert!(
            matches!(&e, GgufError::Unwritable { what, .. } if what.contains(&long)),
            "{e}"
        );
        let ok = "y".repeat(MAX_WRITTEN_TENSOR_NAME_LEN);
        writer_for(&[q(&ok, &[32])]).unwrap();

        for bad in [0u32, 3, 48] {
            let mut md = small_metadata();
            md.push_u32("general.alignment", bad).unwrap();
            let e = GgufWriter::new(Vec::new(), &md, &[]).unwrap_err();
            assert!(
                matches!(e, GgufError::BadAlignment { alignment } if alignment == u64::from(bad))
            );
        }
        let mut md = small_metadata();
        md.push_u64("general.alignment", 64).unwrap();
        let e = GgufWriter::new(Vec::new(), &md, &[]).unwrap_err();
        assert!(matches!(&e, GgufError::TypeMismatch { key, .. } if key == "general.alignment"));

        let mut md = Metadata::new();
        let mut deep = Array::U8(vec![1]);
        for _ in 0..4 {
            deep = Array::Array(vec![deep]);
        }
        md.push_array("too.deep", deep).unwrap();
        let e = GgufWriter::new(Vec::new(), &md, &[]).unwrap_err();
        assert!(
            matches!(&e, GgufError::Unwritable { what, .. } if what.contains("too.deep")),
            "{e}"
        );

        let mut md = Metadata::new();
        md.push_str("long.key".repeat(9000), "v").unwrap();
        let e = GgufWriter::new(Vec::new(), &md, &[]).unwrap_err();
        assert!(matches!(&e, GgufError::Unwritable { .. }), "{e}");
    }

    #[test]
    fn writer_refuses_a_string_above_the_reader_limit() {
        let mut md = Metadata::new();
        md.push_str_array(
            "big.strings",
            vec!["ok".into(), "s".repeat(chatglm::gguf::MAX_STRING_LEN + 1)],
        )
        .unwrap();
        let e = GgufWriter::new(Vec::new(), &md, &[]).unwrap_err();
        assert!(
            matches!(&e, GgufError::Unwritable { what, .. } if what.contains("big.strings")),
            "{e}"
        );
    }

    #[test]
    fn writer_checks_order_names_and_sizes() {
        let descs = [
            TensorDesc::new("first", &[4], GgmlType::F32),
            TensorDesc::new("second", &[32], GgmlType::Q8_0),
        ];
        let problem = |e: GgufError, name: &str, words: &str| match e {
            GgufError::WriteOrder { tensor, problem } => {
                assert_eq!(tensor, name);
                assert!(problem.contains(words), "{problem}");
            }
            other => panic!("unexpected {other}"),
        };

        let mut w = writer_for(&descs).unwrap();
        problem(
            w.write_tensor("second", &[0; 34]).unwrap_err(),
            "second",
            "out of order",
        );
        problem(
            w.write_tensor("third", &[0; 34]).unwrap_err(),
            "third",
            "not declared",
        );
        problem(
            w.write_tensor("first", &[0; 15]).unwrap_err(),
            "first",
            "expected 16 bytes, got 15",
        );
        problem(
            w.write_chunk(&[0; 4]).unwrap_err(),
            "first",
            "without begin_tensor",
        );
        w.begin_tensor("first").unwrap();
        w.write_chunk(&[1; 10]).unwrap();
        problem(
            w.write_chunk(&[1; 7]).unwrap_err(),
            "first",
            "exceed the size of 16",
        );
        problem(
            w.begin_tensor("second").unwrap_err(),
            "first",
            "only 10 of 16",
        );
        problem(
            w.write_tensor("second", &[0; 34]).unwrap_err(),
            "second",
            "in chunks",
        );
        w.write_chunk(&[1; 6]).unwrap();
        w.write_tensor("second", &[2; 34]).unwrap();
        problem(
            w.write_tensor("second", &[2; 34]).unwrap_err(),
            "second",
            "written twice",
        );
        let file = w.finish().unwrap();
        let f = GgufFile::from_bytes(file).unwrap();
        assert_eq!(f.tensor_data(f.tensor("first").unwrap()), &[1; 16]);
        assert_eq!(f.tensor_data(f.tensor("second").unwrap()), &[2; 34]);

        let mut w = writer_for(&descs).unwrap();
        w.write_tensor("first", &[0; 16]).unwrap();
        problem(w.finish().unwrap_err(), "second", "never written");

        let mut w = writer_for(&descs).unwrap();
        w.begin_tensor("first").unwrap();
        w.write_chunk(&[0; 3]).unwrap();
        problem(w.finish().unwrap_err(), "first", "only 3 of 16");
    }

    /// A writer whose output fails: the error is `Write`, not a panic.
    #[test]
    fn writer_reports_io_errors() {
        #[derive(Debug)]
        struct Failing;
        impl std::io::Write for Failing {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = GgufWriter::new(Failing, &small_metadata(), &[]).unwrap_err();
        assert!(matches!(e, GgufError::Write(_)));
        assert!(e.to_string().contains("disk full"));
    }

    /// Writes the sample files as the fuzzer's seed corpus (`fuzz/seeds/`). Run by hand:
    /// `cargo test -p chatglm --test gguf_writer write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        std::fs::create_dir_all(&dir).unwrap();
        let small = write_to_vec(&small_metadata(), &small_tensors());
        std::fs::write(dir.join("small.gguf"), small).unwrap();
        let full = write_to_vec(&full_metadata(Some(64)), &full_tensors());
        std::fs::write(dir.join("full.gguf"), full).unwrap();
    }

    /// A vocabulary of the real size (65 024 tokens, ChatGLM2) round-trips as typed arrays.
    #[test]
    fn vocabulary_sized_arrays() {
        let n: i32 = 65_024;
        let tokens: Vec<String> = (0..n).map(|i| format!("▁tok{i}")).collect();
        let scores: Vec<f32> = (0..n).map(|i| -(i as f32) / 7.0).collect();
        let types: Vec<i32> = (0..n).map(|i| i % 6).collect();
        let mut md = Metadata::new();
        md.push_str("tokenizer.ggml.model", "llama").unwrap();
        md.push_str_array("tokenizer.ggml.tokens", tokens.clone())
            .unwrap();
        md.push_f32_array("tokenizer.ggml.scores", scores.clone())
            .unwrap();
        md.push_i32_array("tokenizer.ggml.token_type", types.clone())
            .unwrap();
        let file = GgufWriter::new(Vec::new(), &md, &[])
            .unwrap()
            .finish()
            .unwrap();
        let f = GgufFile::from_bytes(file).unwrap();
        assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap(), tokens);
        assert_eq!(f.get_f32_array("tokenizer.ggml.scores").unwrap(), scores);
        assert_eq!(f.get_i32_array("tokenizer.ggml.token_type").unwrap(), types);
    }
}
