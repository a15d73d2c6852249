//! Fuzz target: `GgufFile::from_bytes` on arbitrary input must return `Ok` or `Err`, never
//! panic, abort or read out of bounds; whatever it accepts must be safe to walk.
#![no_main]

use chatglm::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let len = file.as_bytes().len() as u64;
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.size_bytes);
        assert!(file.data_offset() + t.offset + t.size_bytes <= len);
        assert_eq!(t.offset % file.alignment(), 0);
    }
    for (key, _) in file.metadata().iter() {
        let _ = file.get_u64(key);
        let _ = file.get_str(key);
        let _ = file.get_u8_array(key);
    }
});
