//! Batched decode ([`Model::decode_batch`]) against single steps on the golden checkpoints:
//! 1 to 4 sequences with different prompts (and so different positions), advanced together,
//! get exactly (bit for bit) the logits each gets stepped alone, at f32 and at q4_0 in the
//! row-interleaved layout, with an f16 cache; ChatGLM-6B (v1) sequences, stepped one at a
//! time inside the call, too.

mod common;

use chatglm::gguf::GgufFile;
use chatglm::model::{KvType, Logits, Model, RunState, StateOptions};
use chatglm::sampler::argmax;
use chatglm_kernels::GgmlType;
use common::*;
use std::sync::Arc;

/// Decode steps per sequence.
const STEPS: usize = 6;

fn state(model: &Model, threads: usize) -> RunState {
    model
        .new_state(StateOptions {
            context: model.config().context_length.min(512),
            batch: 32,
            kv_type: KvType::F16,
            threads,
        })
        .unwrap()
}

/// `../shared/golden-glm1/<name>` (relative to the repository root).
fn glm1_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/golden-glm1")
        .join(name)
}

/// The prompts of the checkpoint's golden cases and its prefill prompt (`g`, its
/// golden.json), each also cut shorter (`cut`), for sequences of different lengths.
fn prompts(g: &serde_json::Value, model: &Model, cut: bool) -> Vec<Vec<u32>> {
    let mut all: Vec<Vec<u32>> = g["greedy"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| u32s(&c["input_ids"]))
        .collect();
    all.push(u32s(&g["prefill"]["input_ids"]));
    if cut {
        let cut: Vec<Vec<u32>> = all.iter().map(|p| p[..p.len() / 2 + 1].to_vec()).collect();
        all.extend(cut);
    }
    let room = model.config().context_length.min(512) - STEPS - 1;
    all.iter_mut().for_each(|p| p.truncate(room));
    all
}

/// The logits of each decode step of `prompt` stepped alone (greedy), `(STEPS, vocab)`.
fn alone(model: &Model, prompt: &[u32]) -> Vec<Vec<u32>> {
    let mut st = state(model, 1);
    let mut logits = model
        .forward(&mut st, prompt, 0, Logits::Last)
        .unwrap()
        .to_vec();
    let mut steps = Vec::new();
    for s in 0..STEPS {
        let next = argmax(&logits);
        logits = model
            .forward(&mut st, &[next], prompt.len() + s, Logits::Last)
            .unwrap()
            .to_vec();
        steps.push(logits.iter().map(|x| x.to_bits()).collect());
    }
    steps
}

fn check(name: &str, model: &Model) {
    check_prompts(name, model, &prompts(&golden_json(name), model, true));
}

fn check_prompts(name: &str, model: &Model, prompts: &[Vec<u32>]) {
    let vocab = model.config().vocab_size;
    let want: Vec<_> = prompts.iter().map(|p| alone(model, p)).collect();
    let mut batch = model.new_decode_batch(4, 2).unwrap();
    for n in 1..=4 {
        // Sequences n-1, n, ..: a different mix (and set of positions) for each n.
        let pick: Vec<usize> = (0..n).map(|i| (n - 1 + 2 * i) % prompts.len()).collect();
        let mut states: Vec<RunState> = pick.iter().map(|_| state(model, 1)).collect();
        let mut logits = vec![0.0; n * vocab];
        for ((st, &p), row) in states
            .iter_mut()
            .zip(&pick)
            .zip(logits.chunks_exact_mut(vocab))
        {
            model
                .forward_into(st, &prompts[p], 0, Logits::Last, row)
                .unwrap();
        }
        for s in 0..STEPS {
            let tokens: Vec<u32> = logits.chunks_exact(vocab).map(argmax).collect();
            let positions: Vec<usize> = pick.iter().map(|&p| prompts[p].len() + s).collect();
            let mut refs: Vec<&mut RunState> = states.iter_mut().collect();
            model
                .decode_batch(&mut batch, &mut refs, &tokens, &positions, &mut logits)
                .unwrap();
            for (row, &p) in logits.chunks_exact(vocab).zip(&pick) {
                let bits: Vec<u32> = row.iter().map(|x| x.to_bits()).collect();
                assert!(
                    want[p].get(s) == Some(&bits),
                    "{name}: {n} sequences, step {s}, prompt {p}: logits differ from a single step"
                );
            }
        }
        for (st, &p) in states.iter().zip(&pick) {
            assert_eq!(st.kv_cache().len(), prompts[p].len() + STEPS);
        }
    }
}

fn load(name: &str, ty: GgmlType, portable: bool) -> Model {
    load_dir(name, &golden_dir(name), ty, portable)
}

fn load_dir(name: &str, dir: &std::path::Path, ty: GgmlType, portable: bool) -> Model {
    let out = temp_dir(name).join(format!("{name}-{ty}.gguf"));
    convert_checkpoint_as(dir, ty, &out, portable).unwrap();
    let model = Model::from_gguf(Arc::new(GgufFile::open(&out).unwrap())).unwrap();
    let _ = std::fs::remove_file(&out);
    model
}

#[test]
fn batched_steps_give_the_logits_of_single_steps_chatglm2_3() {
    for name in GOLDEN {
        check(name, &load(name, GgmlType::F32, true));
        check(name, &load(name, GgmlType::Q4_0, false));
    }
}

#[test]
fn batched_steps_give_the_logits_of_single_steps_glm4() {
    for name in GOLDEN_GLM4 {
        check(name, &load(name, GgmlType::F32, true));
        check(name, &load(name, GgmlType::Q4_0, false));
    }
}

/// ChatGLM-6B (v1) sequences are stepped one at a time inside the batched call: the same
/// logits too. (Its prompts end with `[gMASK] <sop>`, so they are not cut.)
#[test]
fn batched_steps_give_the_logits_of_single_steps_chatglm1() {
    let name = "glm1-tiny";
    let dir = glm1_dir(name);
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    for (ty, portable) in [(GgmlType::F32, true), (GgmlType::Q4_0, false)] {
        let model = load_dir(name, &dir, ty, portable);
        check_prompts(name, &model, &prompts(&g, &model, false));
    }
}

#[test]
fn a_batch_refuses_more_sequences_than_it_holds_and_mismatched_inputs() {
    let model = load("glm2-tiny", GgmlType::Q8_0, true);
    let mut batch = model.new_decode_batch(1, 1).unwrap();
    let vocab = model.config().vocab_size;
    let (mut a, mut b) = (state(&model, 1), state(&model, 1));
    let mut logits = vec![0.0; 2 * vocab];
    let err = model
        .decode_batch(
            &mut batch,
            &mut [&mut a, &mut b],
            &[1, 1],
            &[0, 0],
            &mut logits,
        )
        .unwrap_err();
    assert!(err.to_string().contains("2 sequences"), "{err}");
    let err = model
        .decode_batch(
            &mut batch,
            &mut [&mut a],
            &[1, 1],
            &[0],
            &mut logits[..vocab],
        )
        .unwrap_err();
    assert!(err.to_string().contains("tokens"), "{err}");
    // A position past the cache is refused as for a single call.
    let err = model
        .decode_batch(&mut batch, &mut [&mut a], &[1], &[3], &mut logits[..vocab])
        .unwrap_err();
    assert!(err.to_string().contains("past the 0 cached"), "{err}");
    assert!(model.new_decode_batch(0, 1).is_err());
}
