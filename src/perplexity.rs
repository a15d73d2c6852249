//! Perplexity of a model on a text: how quantization quality is measured.
//!
//! The text's SentencePiece ids (no chat template) are cut into windows of at most
//! `context - 2` tokens; each window runs after `[gMASK] sop`, from position 0, and every text
//! token is scored by the logits of the position before it (the first by those at `sop`).
//! `ppl = exp(mean negative log-likelihood)` over all text tokens.

use crate::error::{Error, Result};
use crate::model::{KvType, Logits, StateOptions};
use crate::Engine;

/// Tokens run through the model per call while scoring (the logits of all of them are kept).
const SCORE_BATCH: usize = 64;

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// `exp(nll / tokens)`.
    pub ppl: f64,
    /// Text tokens scored.
    pub tokens: usize,
    /// Sum of the negative log-likelihoods (natural log).
    pub nll: f64,
}

/// `-log softmax(logits)[target]`, computed in f64.
fn nll(logits: &[f32], target: u32) -> Result<f64> {
    if let Some((index, &value)) = logits.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::Sampler(crate::sampler::SamplerError::NonFinite {
            index,
            value,
        }));
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let target = logits
        .get(target as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY) as f64;
    Ok(max + sum.ln() - target)
}

/// The perplexity of `engine`'s model on `text` with windows of `context` positions (at least
/// 3) on `threads` threads (0: one per CPU), calling `progress(scored, total)` after each
/// window.
pub fn perplexity(
    engine: &Engine,
    text: &str,
    context: usize,
    kv_type: KvType,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    let max = engine.config().context_length;
    if !(3..=max).contains(&context) {
        return Err(Error::WindowOutOfRange {
            window: context,
            max,
        });
    }
    let tok = engine.tokenizer();
    let ids = tok.encode(text);
    if ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let model = engine.model();
    let vocab = model.config().vocab_size;
    let batch = SCORE_BATCH.min(context);
    let threads = crate::session::resolve_threads(threads);
    let mut state = model.new_state(StateOptions {
        context,
        batch,
        kv_type,
        threads,
    })?;
    let (mut total, mut scored) = (0.0f64, 0usize);
    for window in ids.chunks(context - 2) {
        let mut input = tok.prompt_prefix().to_vec();
        input.extend_from_slice(window);
        // input[i + 1] is predicted by the logits at position i.
        let mut pos = 0;
        for piece in input.chunks(batch) {
            let logits = model.forward(&mut state, piece, pos, Logits::All)?;
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                if let Some(&target) = input.get(pos + i + 1).filter(|_| pos + i >= 1) {
                    total += nll(row, target)?;
                    scored += 1;
                }
            }
            pos += piece.len();
        }
        progress(scored, ids.len());
    }
    Ok(Perplexity {
        ppl: (total / scored as f64).exp(),
        tokens: scored,
        nll: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let l = vec![0.5f32; 8];
        assert!((nll(&l, 3).unwrap() - 8f64.ln()).abs() < 1e-12);
        let mut l = vec![0.0f32; 4];
        l[2] = 100.0;
        assert!(nll(&l, 2).unwrap() < 1e-30 + 1e-12);
        assert!(nll(&[f32::NAN; 3], 0).is_err());
    }
}
