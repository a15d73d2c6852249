//! GGUF reader against broken files. Each case starts from a valid file written by
//! `GgufWriter` (or, where the writer refuses to produce the input, a few hand-assembled
//! bytes), corrupts one field, and asserts the exact error variant and that the message
//! names the key, tensor or offset.

mod gguf_common;

/// Named so that `cargo test -p chatglm gguf` selects these tests.
mod gguf_reader {

    use crate::gguf_common::*;
    use chatglm::gguf::{
        GgufError, GgufFile, Metadata, MAX_KEY_LEN, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
    };
    use chatglm_kernels::GgmlType;

    fn small_file() -> Vec<u8> {
        write_to_vec(&small_metadata(), &small_tensors())
    }

    fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(bytes.to_vec())
    }

    /// Parses `bytes`, expecting an error whose message contains every word of `words`.
    fn parse_err(bytes: &[u8], words: &[&str]) -> GgufError {
        let e = parse(bytes).expect_err("corrupt file must be rejected");
        let msg = e.to_string();
        for w in words {
            assert!(msg.contains(w), "message {msg:?} lacks {w:?}");
        }
        e
    }

    /// Offset of the u32 value type that follows the key `key`.
    fn value_type_field(file: &[u8], key: &str) -> usize {
        string_field(file, key) + 8 + key.len()
    }

    #[test]
    fn the_small_file_is_valid() {
        let f = parse(&small_file()).unwrap();
        assert_eq!(f.tensors().len(), 3);
        assert_eq!(f.metadata().len(), 6);
    }

    #[test]
    fn truncated_at_every_offset() {
        let file = small_file();
        let f = parse(&file).unwrap();
        let data_offset = f.data_offset() as usize;
        let last = f.tensors().iter().max_by_key(|t| t.offset).unwrap();
        let data_end = data_offset + (last.offset + last.size_bytes) as usize;
        let infos_end = tensor_fields(&file, "w8", 1).end;
        assert!(
            infos_end < data_offset,
            "the sample must have padding before the data"
        );
        assert!(
            data_end < file.len(),
            "the sample must have padding after the data"
        );

        for cut in 0..file.len() {
            let result = parse(&file[..cut]);
            if cut >= data_end {
                // Only the padding after the last tensor is missing: still a valid file.
                let g = result.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
                assert_eq!(g.tensor_data(g.tensor("w8").unwrap()), f.tensor_data(last));
                continue;
            }
            let e = result.expect_err("truncated file accepted");
            let msg = e.to_string();
            match cut {
                // Header.
                0..=23 => assert!(
                    matches!(&e, GgufError::Truncated { offset, .. } if *offset as usize <= cut),
                    "cut {cut}: {e}"
                ),
                // Metadata and tensor infos: a field runs past the end, or a count cannot fit.
                _ if cut < infos_end => assert!(
                    matches!(
                        e,
                        GgufError::Truncated { .. } | GgufError::CountTooLarge { .. }
                    ),
                    "cut {cut}: {e}"
                ),
                // Padding before the data section.
                _ if cut < data_offset => assert!(
                    matches!(&e, GgufError::Truncated { what, .. } if what.contains("padding")),
                    "cut {cut}: {e}"
                ),
                // Data section: the tensor that no longer fits is named.
                _ => assert!(
                    matches!(&e, GgufError::TensorOutOfBounds { tensor, .. }
                    if f.tensor(tensor).is_some_and(|t| data_offset as u64 + t.offset + t.size_bytes > cut as u64)),
                    "cut {cut}: {e}"
                ),
            }
            // Past the counts, messages name what was being read.
            if (24..infos_end).contains(&cut) {
                assert!(
                    msg.contains("metadata") || msg.contains("tensor"),
                    "cut {cut}: {msg}"
                );
            }
        }
    }

    #[test]
    fn wrong_magic() {
        let mut file = small_file();
        file[3] = b'G';
        let e = parse_err(&file, &["not a GGUF file"]);
        assert!(matches!(e, GgufError::BadMagic { found } if &found == b"GGUG"));
    }

    #[test]
    fn versions() {
        let mut file = small_file();
        put_u32(&mut file, 4, 1);
        let e = parse_err(&file, &["version 1", "re-convert"]);
        assert!(matches!(e, GgufError::UnsupportedVersion { version: 1 }));
        put_u32(&mut file, 4, 4);
        let e = parse_err(&file, &["version 4"]);
        assert!(matches!(e, GgufError::UnsupportedVersion { version: 4 }));
        put_u32(&mut file, 4, 3u32.swap_bytes());
        parse_err(&file, &["big-endian"]);
        // Version 2 has the same layout and is read.
        put_u32(&mut file, 4, 2);
        assert_eq!(parse(&file).unwrap().version(), 2);
    }

    #[test]
    fn absurd_metadata_count() {
        let file = small_file();
        let remaining = (file.len() - 24) as u64;
        for count in [u64::MAX, remaining / 13 + 1, 1 << 40] {
            let mut bad = file.clone();
            put_u64(&mut bad, 16, count);
            let e = parse_err(&bad, &["metadata key-value count", "byte 16"]);
            assert!(
                matches!(e, GgufError::CountTooLarge { count: c, offset: 16, .. } if c == count),
                "{e}"
            );
        }
        // One more entry than there are: the tensor infos are read as a key-value pair and fail.
        let mut bad = file.clone();
        put_u64(&mut bad, 16, 7);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn absurd_tensor_count() {
        let file = small_file();
        let remaining = (file.len() - 24) as u64;
        for count in [u64::MAX, remaining / 24 + 1] {
            let mut bad = file.clone();
            put_u64(&mut bad, 8, count);
            let e = parse_err(&bad, &["tensor count", "byte 8"]);
            assert!(
                matches!(e, GgufError::CountTooLarge { offset: 8, .. }),
                "{e}"
            );
        }
        // One tensor more than there are: the padding is read as a tensor info and fails.
        let mut bad = file.clone();
        put_u64(&mut bad, 8, 4);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn absurd_string_lengths() {
        let file = small_file();
        // A key length.
        let at = string_field(&file, "general.architecture");
        for len in [u64::MAX, MAX_KEY_LEN as u64 + 1] {
            let mut bad = file.clone();
            put_u64(&mut bad, at, len);
            let e = parse_err(&bad, &["key of metadata entry #0"]);
            assert!(matches!(e, GgufError::StringTooLong { offset, .. } if offset as usize == at));
        }
        let mut bad = file.clone();
        put_u64(&mut bad, at, (file.len() - at - 8) as u64 + 1);
        let e = parse_err(&bad, &["key of metadata entry #0"]);
        assert!(matches!(e, GgufError::Truncated { .. }), "{e}");

        // A string value.
        let at = string_field(&file, "chatglm");
        for len in [u64::MAX, MAX_STRING_LEN as u64 + 1] {
            let mut bad = file.clone();
            put_u64(&mut bad, at, len);
            let e = parse_err(&bad, &["\"general.architecture\""]);
            assert!(
                matches!(e, GgufError::StringTooLong { len: l, .. } if l == len),
                "{e}"
            );
        }
        let mut bad = file.clone();
        let just_too_big = (file.len() - at - 8) as u64 + 1;
        put_u64(&mut bad, at, just_too_big);
        let e = parse_err(&bad, &["\"general.architecture\""]);
        assert!(
            matches!(e, GgufError::Truncated { needed, .. } if needed == just_too_big),
            "{e}"
        );

        // A string inside an array.
        let at = string_field(&file, "▁a");
        let mut bad = file.clone();
        put_u64(&mut bad, at, u64::MAX);
        let e = parse_err(&bad, &["element 1", "\"tokenizer.ggml.tokens\""]);
        assert!(matches!(e, GgufError::StringTooLong { .. }), "{e}");

        // A tensor name.
        let at = string_field(&file, "w4");
        let mut bad = file.clone();
        put_u64(&mut bad, at, MAX_TENSOR_NAME_LEN as u64 + 1);
        let e = parse_err(&bad, &["name of tensor #1"]);
        assert!(matches!(e, GgufError::StringTooLong { .. }), "{e}");
    }

    #[test]
    fn absurd_array_lengths() {
        let file = small_file();
        let key = "tokenizer.ggml.tokens";
        let count_at = value_type_field(&file, key) + 4 + 4;
        assert_eq!(get_u64(&file, count_at), 2);
        let remaining = (file.len() - count_at - 8) as u64;
        for count in [u64::MAX, remaining / 8 + 1, u64::MAX / 8 + 1] {
            let mut bad = file.clone();
            put_u64(&mut bad, count_at, count);
            let e = parse_err(&bad, &["length of array", key]);
            assert!(
                matches!(e, GgufError::CountTooLarge { offset, .. } if offset as usize == count_at),
                "{e}"
            );
        }

        // A numeric array (the inner u16 array of test.nested): 2 bytes per element.
        let key = "test.nested";
        let outer = value_type_field(&file, key) + 4;
        let inner_count_at = outer + 4 + 8 + 4;
        assert_eq!(get_u64(&file, inner_count_at), 2);
        let remaining = (file.len() - inner_count_at - 8) as u64;
        for count in [u64::MAX, remaining / 2 + 1] {
            let mut bad = file.clone();
            put_u64(&mut bad, inner_count_at, count);
            let e = parse_err(&bad, &["nesting level 2", key]);
            assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
        }
    }

    #[test]
    fn bad_value_types() {
        let file = small_file();
        let at = value_type_field(&file, "chatglm.block_count");
        for id in [13u32, 0xffff_ffff] {
            let mut bad = file.clone();
            put_u32(&mut bad, at, id);
            let e = parse_err(
                &bad,
                &["\"chatglm.block_count\"", "unknown GGUF value type id"],
            );
            assert!(
                matches!(e, GgufError::BadValueType { id: i, offset, .. } if i == id && offset as usize == at)
            );
        }
        // An array's element type.
        let at = value_type_field(&file, "tokenizer.ggml.tokens") + 4;
        let mut bad = file.clone();
        put_u32(&mut bad, at, 200);
        let e = parse_err(&bad, &["element type", "\"tokenizer.ggml.tokens\""]);
        assert!(matches!(e, GgufError::BadValueType { id: 200, .. }));

        // A bool that is neither 0 nor 1.
        let at = value_type_field(&file, "test.flag") + 4;
        let mut bad = file.clone();
        bad[at] = 2;
        let e = parse_err(&bad, &["\"test.flag\"", "bool"]);
        assert!(matches!(e, GgufError::BadBool { byte: 2, .. }));
    }

    #[test]
    fn bad_tensor_types() {
        let file = small_file();
        let fields = tensor_fields(&file, "w4", 2);
        assert_eq!(
            u32::from_le_bytes(file[fields.ty..fields.ty + 4].try_into().unwrap()),
            2
        );
        for id in [4u32, 5, 31, 38, 40, 99, u32::MAX] {
            let mut bad = file.clone();
            put_u32(&mut bad, fields.ty, id);
            let e = parse_err(&bad, &["\"w4\"", &format!("type id {id}")]);
            assert!(
                matches!(e, GgufError::UnknownTensorType { ref tensor, id: i } if tensor == "w4" && i == id)
            );
            // Removed ids are named.
            let removed = [(4, "Q4_2"), (31, "Q4_0_4_4"), (38, "IQ4_NL_8_8")];
            if let Some((_, name)) = removed.iter().find(|(i, _)| *i == id) {
                assert!(e.to_string().contains(name), "{e}");
            }
        }
    }

    #[test]
    fn bad_dimension_counts() {
        let file = small_file();
        let fields = tensor_fields(&file, "norm", 1);
        for n in [0u32, 5, u32::MAX] {
            let mut bad = file.clone();
            put_u32(&mut bad, fields.n_dims, n);
            let e = parse_err(&bad, &["\"norm\"", "dimensions"]);
            assert!(
                matches!(e, GgufError::BadDimCount { ref tensor, n_dims } if tensor == "norm" && n_dims == n)
            );
        }
    }

    #[test]
    fn dimensions_that_overflow() {
        let file = small_file();
        let fields = tensor_fields(&file, "w4", 2);
        for dims in [
            [1u64 << 32, 1 << 32],
            [u64::MAX - 31, 1],
            [1 << 63, 0],
            [32, u64::MAX],
        ] {
            let mut bad = file.clone();
            put_u64(&mut bad, fields.dims, dims[0]);
            put_u64(&mut bad, fields.dims + 8, dims[1]);
            let e = parse_err(&bad, &["\"w4\"", "overflow"]);
            assert!(
                matches!(e, GgufError::ElementCountOverflow { ref tensor, .. } if tensor == "w4"),
                "{e}"
            );
        }
        // A row that is not a whole number of blocks.
        let mut bad = file.clone();
        put_u64(&mut bad, fields.dims, 48);
        let e = parse_err(&bad, &["\"w4\"", "48", "block size 32"]);
        assert!(matches!(
            e,
            GgufError::RowNotBlockMultiple {
                ty: GgmlType::Q4_0,
                row_len: 48,
                ..
            }
        ));
        // A bigger but valid shape runs past the data section.
        let mut bad = file.clone();
        put_u64(&mut bad, fields.dims + 8, 1000);
        let e = parse_err(&bad, &["\"w4\""]);
        assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    }

    #[test]
    fn offsets_outside_misaligned_or_overlapping() {
        let file = small_file();
        let f = parse(&file).unwrap();
        let w4 = tensor_fields(&file, "w4", 2);
        let w8 = tensor_fields(&file, "w8", 1);
        let w4_offset = get_u64(&file, w4.offset);
        assert_eq!(w4_offset, f.tensor("w4").unwrap().offset);

        for offset in [1u64 << 20, !31u64] {
            let mut bad = file.clone();
            put_u64(&mut bad, w8.offset, offset);
            let e = parse_err(&bad, &["\"w8\"", "data section"]);
            assert!(
                matches!(e, GgufError::TensorOutOfBounds { ref tensor, offset: o, .. } if tensor == "w8" && o == offset)
            );
        }

        let mut bad = file.clone();
        put_u64(&mut bad, w8.offset, w4_offset + 1);
        let e = parse_err(&bad, &["\"w8\"", "alignment 32"]);
        assert!(matches!(
            e,
            GgufError::MisalignedTensor { alignment: 32, .. }
        ));

        // w8 at the same offset as w4.
        let mut bad = file.clone();
        put_u64(&mut bad, w8.offset, w4_offset);
        let e = parse_err(&bad, &["\"w4\"", "\"w8\"", "overlap"]);
        assert!(
            matches!(e, GgufError::OverlappingTensors { ref first, ref second, .. }
        if first == "w4" && second == "w8")
        );
        // w4 (36 bytes) starting one alignment step before w8.
        let w8_offset = get_u64(&file, w8.offset);
        let mut bad = file.clone();
        put_u64(&mut bad, w4.offset, w8_offset - 32);
        let e = parse_err(&bad, &["overlap"]);
        assert!(
            matches!(e, GgufError::OverlappingTensors { ref first, first_end, .. }
        if first == "w4" && first_end == w8_offset + 4)
        );
    }

    #[test]
    fn duplicates() {
        // Duplicate tensor names: rename "w8" to "w4".
        let mut file = small_file();
        let at = string_field(&file, "w8") + 8;
        file[at + 1] = b'4';
        let e = parse_err(&file, &["duplicate tensor name \"w4\""]);
        assert!(matches!(e, GgufError::DuplicateTensor { ref name } if name == "w4"));

        // Duplicate keys: write "test.flah", then rename it to "test.flag".
        let mut md: Metadata = small_metadata();
        md.push_bool("test.flah", false).unwrap();
        let mut file = write_to_vec(&md, &small_tensors());
        let at = string_field(&file, "test.flah") + 8;
        file[at + 8] = b'g';
        let e = parse_err(&file, &["duplicate metadata key \"test.flag\""]);
        assert!(matches!(e, GgufError::DuplicateKey { ref key } if key == "test.flag"));
    }

    #[test]
    fn invalid_utf8() {
        let file = small_file();
        let cases: [(&str, &[&str]); 4] = [
            ("test.flag", &["key of metadata entry #3"]),
            (
                "chatglm",
                &["value of metadata key \"general.architecture\""],
            ),
            ("▁a", &["element 1", "\"tokenizer.ggml.tokens\""]),
            ("norm", &["name of tensor #0"]),
        ];
        for (s, words) in cases {
            let mut bad = file.clone();
            let at = string_field(&bad, s) + 8;
            bad[at] = 0xff;
            let e = parse_err(&bad, words);
            assert!(
                matches!(e, GgufError::InvalidUtf8 { offset, .. } if offset as usize == at),
                "{e}"
            );
            assert!(e.to_string().contains("UTF-8"));
        }
    }

    #[test]
    fn bad_alignment() {
        let mut md = small_metadata();
        md.push_u32("general.alignment", 64).unwrap();
        let file = write_to_vec(&md, &small_tensors());
        let f = parse(&file).unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        let at = value_type_field(&file, "general.alignment") + 4;
        for alignment in [0u32, 3, 96, u32::MAX] {
            let mut bad = file.clone();
            put_u32(&mut bad, at, alignment);
            let e = parse_err(&bad, &["general.alignment", "power of two"]);
            assert!(
                matches!(e, GgufError::BadAlignment { alignment: a } if a == u64::from(alignment))
            );
        }
        // An alignment of the wrong type.
        let mut bad = file.clone();
        put_u32(&mut bad, at - 4, 8); // now a string whose length field starts with 64
        assert!(parse(&bad).is_err());
        // Alignments of other types (which the writer refuses to write): any integer that fits in
        // u32 is read, anything else names the key.
        let alignment_file = |ty: u32, value: &[u8]| {
            let mut v = raw::header(0, 1);
            raw::string(&mut v, b"general.alignment");
            raw::u32(&mut v, ty);
            v.extend_from_slice(value);
            v
        };
        let mut string_value = Vec::new();
        raw::string(&mut string_value, b"32");
        let e = parse_err(
            &alignment_file(8, &string_value),
            &["general.alignment", "string"],
        );
        assert!(matches!(e, GgufError::TypeMismatch { .. }), "{e}");
        let e = parse_err(
            &alignment_file(5, &(-32i32).to_le_bytes()),
            &["general.alignment", "-32"],
        );
        assert!(matches!(e, GgufError::OutOfRange { .. }), "{e}");
        let f = parse(&alignment_file(10, &64u64.to_le_bytes())).unwrap();
        assert_eq!(f.alignment(), 64);
    }

    /// Hand-assembled bytes for what the writer refuses to produce.
    mod raw {
        pub fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
            let mut v = b"GGUF".to_vec();
            v.extend_from_slice(&3u32.to_le_bytes());
            v.extend_from_slice(&n_tensors.to_le_bytes());
            v.extend_from_slice(&n_kv.to_le_bytes());
            v
        }
        pub fn string(v: &mut Vec<u8>, s: &[u8]) {
            v.extend_from_slice(&(s.len() as u64).to_le_bytes());
            v.extend_from_slice(s);
        }
        pub fn u32(v: &mut Vec<u8>, x: u32) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        pub fn u64(v: &mut Vec<u8>, x: u64) {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// One key whose value is `levels` arrays nested in each other around one u8.
    fn nested_file(levels: usize) -> Vec<u8> {
        let mut v = raw::header(0, 1);
        raw::string(&mut v, b"deep");
        raw::u32(&mut v, 9); // array
        for _ in 1..levels {
            raw::u32(&mut v, 9); // of arrays
            raw::u64(&mut v, 1);
        }
        raw::u32(&mut v, 0); // of u8
        raw::u64(&mut v, 1);
        v.push(42);
        v
    }

    #[test]
    fn nesting_depth() {
        let f = parse(&nested_file(4)).unwrap();
        assert_eq!(f.get_array("deep").unwrap().depth(), 4);
        let e = parse_err(&nested_file(5), &["\"deep\"", "nested more than 4 levels"]);
        assert!(matches!(e, GgufError::NestingTooDeep { max: 4, .. }));
        // Far deeper nesting cannot exhaust the stack: it stops at level 5.
        let e = parse(&nested_file(100_000)).unwrap_err();
        assert!(matches!(e, GgufError::NestingTooDeep { .. }));
    }

    #[test]
    fn tensor_name_limits() {
        let build = |name: &[u8]| {
            let mut v = raw::header(1, 0);
            raw::string(&mut v, name);
            raw::u32(&mut v, 1);
            raw::u64(&mut v, 4);
            raw::u32(&mut v, 0);
            raw::u64(&mut v, 0);
            v.resize(v.len().next_multiple_of(32) + 32, 0);
            v
        };
        // 64 bytes is the spec's limit and is read (the writer stops at 63 for llama.cpp).
        let name = "n".repeat(MAX_TENSOR_NAME_LEN);
        let f = parse(&build(name.as_bytes())).unwrap();
        assert_eq!(f.tensors()[0].name, name);
        let e = parse_err(&build(&[b'n'; 65]), &["name of tensor #0", "65"]);
        assert!(matches!(e, GgufError::StringTooLong { max: 64, .. }));
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for bytes in [
            &b""[..],
            b"G",
            b"GGUF",
            b"GGUF\x03\x00\x00\x00",
            b"GGUF\x03\x00\x00\x00\x00",
        ] {
            let e = parse(bytes).unwrap_err();
            assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
        }
        // The smallest valid file: a header with no keys and no tensors.
        let f = parse(&raw::header(0, 0)).unwrap();
        assert!(f.tensors().is_empty() && f.metadata().is_empty());
    }
}
