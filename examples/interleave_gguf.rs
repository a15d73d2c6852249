//! Rewrites a GGUF file with its 2-D Q4_0 / Q8_0 weights in the row-interleaved types
//! (`q4_0x8`, `q8_0x8`), everything else unchanged; the embedding stays portable (it is only
//! read row by row). A stand-in until `chatglm-convert` writes them itself:
//!
//! ```text
//! cargo run --release --example interleave_gguf -- IN.gguf OUT.gguf
//! ```

use chatglm::gguf::{GgufFile, GgufWriter, TensorDesc};
use chatglm_kernels::interleave;
use std::io::BufWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(src), Some(dst)) = (args.get(1), args.get(2)) else {
        return Err("usage: interleave_gguf IN.gguf OUT.gguf".into());
    };
    let g = GgufFile::open(src)?;
    let target = |t: &chatglm::gguf::TensorInfo| {
        if t.dims.len() == 2 && t.name != "token_embd.weight" {
            t.ty.interleaved()
                .filter(|_| t.dims[1] % 8 == 0)
                .unwrap_or(t.ty)
        } else {
            t.ty
        }
    };
    let descs: Vec<TensorDesc> = g
        .tensors()
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), &t.dims, target(t)))
        .collect();
    let out = BufWriter::new(std::fs::File::create(dst)?);
    let mut w = GgufWriter::new(out, g.metadata(), &descs)?;
    for t in g.tensors() {
        let data = g.tensor_data(t);
        if target(t) != t.ty {
            let (rows, cols) = (t.dims[1] as usize, t.dims[0] as usize);
            let (ty, bytes) = interleave(t.ty, rows, cols, data)?;
            assert_eq!(ty, target(t));
            w.write_tensor(&t.name, &bytes)?;
        } else {
            w.write_tensor(&t.name, data)?;
        }
    }
    w.finish()?;
    println!("wrote {dst}");
    Ok(())
}
