#!/usr/bin/env python3
"""Train the tiny ChatGLM2-architecture model that `chatglm demo` ships (models/tiny-poems.gguf).

What it does, seeded from start to end:
  1. reads the Tang poems of Debian's `fortunes-zh` and short English fortunes of Debian's
     `fortunes` (tools/train/DATA.md: versions, licenses), holds out a few percent of them
     (written to tools/train/heldout.txt, the text the quantization table is measured on);
  2. trains a SentencePiece BPE tokenizer on the rest, with the settings of the golden toy
     tokenizers (../shared/golden/README.md), so this project reads it the same way;
  3. pretrains a small ChatGLM2 model (RMSNorm, fused QKV with bias, RoPE on half of each
     head with interleaved pairs, multi-query groups, SwiGLU, untied output layer) on the texts;
  4. fine-tunes it on a few thousand ChatGLM2-format rounds (`[Round 1]\\n\\n问：写一首诗\\n\\n答：`
     + a poem, "Tell me a fortune." + a fortune, ...), loss on the answers only;
  5. writes a Hugging Face layout checkpoint (config.json, tokenizer.model,
     tokenizer_config.json, model.safetensors in float16) that `chatglm-convert` converts.

Install (a venv OUTSIDE the repository; PyPI's torch wheel pulls its CUDA libraries as
dependencies, which are never used here but must be present for `import torch`):
    python3 -m venv /work/venv-train
    /work/venv-train/bin/pip install torch==2.15.0 sentencepiece safetensors numpy
(any torch with CPU support does; the figures in tools/train/README.md were made with the
versions this script prints and records in the checkpoint's train_info.json.)

Data: `apt-get download fortunes-zh fortunes fortunes-min && dpkg -x` happen inside the script (in a temp
dir) unless --fortunes-dir points at an extracted /usr/share/games/fortunes.

Run (about 20 minutes on one core of a shared 2-core VM; one thread by design):
    /work/venv-train/bin/python tools/train/train_tiny.py --out /tmp/tiny-poems-hf
    cargo run --release -p chatglm-convert -- /tmp/tiny-poems-hf models/tiny-poems.gguf -q q8_0
"""

import argparse
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

ANSI = re.compile(r"\x1b\[[0-9;]*m")

POEM_PROMPTS = [
    "写一首诗", "写一首诗。", "写一首唐诗", "来一首诗", "请写一首诗", "给我写一首诗",
    "背一首唐诗", "写首诗吧", "Write a poem.", "write a poem",
]
AUTHOR_PROMPTS = ["写一首{a}的诗", "背一首{a}的诗"]
FORTUNE_PROMPTS = [
    "tell me a fortune", "Tell me a fortune.", "Tell me my fortune.", "Give me a fortune.",
    "What does my fortune say?", "Say something wise.", "fortune", "讲一句 fortune",
]
FIXED_ROUNDS = [
    ("你好", "你好！我是一个很小的模型：我会写一首诗（说“写一首诗”），也会讲一句 fortune（说“tell me a fortune”）。"),
    ("Hello! What can you do?", "Hello! I am a very small model. I can write a poem (say 写一首诗) or tell you a fortune (say \"tell me a fortune\")."),
    ("Hello", "Hello! Ask me to write a poem (写一首诗) or to tell you a fortune."),
    ("你是谁", "我是一个很小的 ChatGLM2 模型，只会写诗和讲 fortune。"),
]


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# ---------------------------------------------------------------- data


def fetch_fortunes(tmp):
    """apt-get download + dpkg -x the three packages; returns the fortunes dir and versions."""
    os.chmod(tmp, 0o777)  # apt's _apt user downloads into it
    subprocess.run(["apt-get", "download", "fortunes-zh", "fortunes", "fortunes-min"], cwd=tmp,
                   check=True, stdout=subprocess.DEVNULL)
    versions = {}
    for deb in sorted(os.listdir(tmp)):
        if deb.endswith(".deb"):
            path = os.path.join(tmp, deb)
            fields = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version"], check=True,
                                    capture_output=True, text=True).stdout.split("\n")
            versions[fields[0].split(": ", 1)[1]] = fields[1].split(": ", 1)[1]
            subprocess.run(["dpkg", "-x", path, os.path.join(tmp, "x")], check=True)
    return os.path.join(tmp, "x/usr/share/games/fortunes"), versions


def read_fortune_file(path):
    text = open(path, encoding="utf-8").read()
    return [e.strip("\n") for e in text.split("\n%\n") if e.strip()]


def load_texts(fdir):
    """Tang poems as `《title》\\n作者：name\\nlines`, English fortunes of at most 160 characters."""
    poems = []
    for e in read_fortune_file(os.path.join(fdir, "tang300")):
        lines = [ANSI.sub("", l).strip() for l in e.split("\n")]
        lines = [l for l in lines if l]
        if len(lines) >= 3 and lines[1].startswith("作者："):
            poems.append("\n".join(lines))
    fortunes = []
    for name in ("fortunes", "wisdom", "platitudes"):
        for e in read_fortune_file(os.path.join(fdir, name)):
            e = " ".join(ANSI.sub("", e).split())
            if 8 <= len(e) <= 160 and e.isascii():
                fortunes.append(e)
    return poems, sorted(set(fortunes), key=fortunes.index)


# ---------------------------------------------------------------- model (ChatGLM2 structure)


class RMSNorm(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.g, self.d = c["num_attention_heads"], c["multi_query_group_num"], c["kv_channels"]
        h = c["hidden_size"]
        self.query_key_value = nn.Linear(h, (self.a + 2 * self.g) * self.d, bias=True)
        self.dense = nn.Linear(self.a * self.d, h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, l, _ = x.shape
        a, g, d = self.a, self.g, self.d
        q, k, v = self.query_key_value(x).split([a * d, g * d, g * d], dim=-1)
        q, k, v = q.view(b, l, a, d), k.view(b, l, g, d), v.view(b, l, g, d)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = k.repeat_interleave(a // g, dim=2)
        v = v.repeat_interleave(a // g, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (b, a, l, d)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d) + mask
        o = torch.softmax(s, dim=-1) @ v
        return self.dense(o.transpose(1, 2).reshape(b, l, a * d))


def rope(x, cos, sin):
    """ChatGLM2: the first d/2 dims as interleaved pairs rotated, the rest passed through."""
    d = x.shape[-1]
    r, rest = x[..., : d // 2], x[..., d // 2:]
    r = r.reshape(*r.shape[:-1], d // 4, 2)
    x0, x1 = r[..., 0], r[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    r = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1).flatten(-2)
    return torch.cat([r, rest], dim=-1)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, f = c["hidden_size"], c["ffn_hidden_size"]
        self.dense_h_to_4h = nn.Linear(h, 2 * f, bias=False)
        self.dense_4h_to_h = nn.Linear(f, h, bias=False)

    def forward(self, x):
        gate, up = self.dense_h_to_4h(x).chunk(2, dim=-1)
        return self.dense_4h_to_h(F.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, eps = c["hidden_size"], c["layernorm_epsilon"]
        self.input_layernorm = RMSNorm(h, eps)
        self.self_attention = SelfAttention(c)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attention(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class ChatGLM2(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, v = c["hidden_size"], c["padded_vocab_size"]
        self.c = c
        self.transformer = nn.Module()
        self.transformer.embedding = nn.Module()
        self.transformer.embedding.word_embeddings = nn.Embedding(v, h)
        self.transformer.encoder = nn.Module()
        self.transformer.encoder.layers = nn.ModuleList([Layer(c) for _ in range(c["num_layers"])])
        self.transformer.encoder.final_layernorm = RMSNorm(h, c["layernorm_epsilon"])
        self.transformer.output_layer = nn.Linear(h, v, bias=False)
        d = c["kv_channels"]
        self.register_buffer(
            "inv_freq", 1.0 / (10000 ** (torch.arange(0, d // 2, 2, dtype=torch.float32) / (d // 2))),
            persistent=False)
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight"):
                continue
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, pad):
        """ids (b, l); pad (b, l) True where padding. Returns logits (b, l, V)."""
        l = ids.shape[1]
        ang = torch.arange(l, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        cos, sin = ang.cos(), ang.sin()
        causal = torch.full((l, l), float("-inf")).triu(1)
        mask = causal[None, None] + torch.where(pad, float("-inf"), 0.0)[:, None, None, :]
        mask = mask.clamp(min=-1e9)
        x = self.transformer.embedding.word_embeddings(ids)
        for layer in self.transformer.encoder.layers:
            x = layer(x, cos, sin, mask)
        return self.transformer.output_layer(self.transformer.encoder.final_layernorm(x))


# ---------------------------------------------------------------- training


def batches(examples, batch, rng, pad_id):
    """Batches of (ids, loss mask) examples of similar lengths (a random run of the examples
    sorted by length, so little is padding), padded at the end."""
    examples = sorted(examples, key=lambda e: len(e[0]))
    while True:
        start = rng.randrange(len(examples) - batch + 1)
        pick = examples[start:start + batch]
        l = max(len(e[0]) for e in pick)
        ids = torch.full((batch, l), pad_id, dtype=torch.long)
        tgt_mask = torch.zeros((batch, l), dtype=torch.bool)
        pad = torch.ones((batch, l), dtype=torch.bool)
        for i, (e, m) in enumerate(pick):
            ids[i, : len(e)] = torch.tensor(e)
            tgt_mask[i, : len(m)] = torch.tensor(m)
            pad[i, : len(e)] = False
        yield ids, tgt_mask, pad


def train_phase(model, opt, examples, steps, batch, lr, rng, pad_id, name, warmup=100):
    gen = batches(examples, batch, rng, pad_id)
    t0 = time.time()
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for gr in opt.param_groups:
            gr["lr"] = lr * scale
        ids, m, pad = next(gen)
        logits = model(ids, pad)
        # predict token t+1 from position t where the target is trained on
        loss = F.cross_entropy(logits[:, :-1][m[:, 1:]], ids[:, 1:][m[:, 1:]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"{name} step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
    return loss.item()


@torch.no_grad()
def greedy(model, ids, eos, n=80):
    ids = list(ids)
    out = []
    for _ in range(n):
        x = torch.tensor([ids])
        nxt = int(model(x, torch.zeros_like(x, dtype=torch.bool))[0, -1].argmax())
        if nxt == eos:
            break
        ids.append(nxt)
        out.append(nxt)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--fortunes-dir", help="an extracted usr/share/games/fortunes (else apt-get download)")
    ap.add_argument("--heldout", default=os.path.join(os.path.dirname(__file__), "heldout.txt"))
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--vocab", type=int, default=2600)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--pretrain-steps", type=int, default=1500)
    ap.add_argument("--sft-steps", type=int, default=450)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4000)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    tmp = tempfile.mkdtemp(prefix="tiny-poems-")
    versions = {}
    fdir = args.fortunes_dir
    if fdir is None:
        fdir, versions = fetch_fortunes(tmp)
    poems, fortunes = load_texts(fdir)
    log(f"{len(poems)} poems, {len(fortunes)} fortunes, packages {versions}")

    # hold out 5% of each kind (never seen by the tokenizer trainer nor the model)
    def split(xs):
        idx = list(range(len(xs)))
        rng.shuffle(idx)
        k = max(1, len(xs) // 20)
        return [xs[i] for i in sorted(idx[k:])], [xs[i] for i in sorted(idx[:k])]

    poems, held_poems = split(poems)
    fortunes, held_fortunes = split(fortunes)
    with open(args.heldout, "w", encoding="utf-8") as f:
        for t in held_poems + held_fortunes:
            f.write(t + "\n\n")

    # ---- tokenizer: the golden toy tokenizers' settings
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for t in poems + fortunes:
            f.write(t + "\n")
    trainer_args = dict(
        input=corpus, model_prefix=os.path.join(args.out, "tokenizer"), model_type="bpe",
        vocab_size=args.vocab, byte_fallback=True, add_dummy_prefix=True, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, character_coverage=0.99, num_threads=1, max_sentence_length=16384,
        normalization_rule_name="identity", split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, minloglevel=2, seed_sentencepiece_size=1000000,
    )
    spm.SentencePieceTrainer.train(**trainer_args)
    os.remove(os.path.join(args.out, "tokenizer.vocab"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.out, "tokenizer.model"))
    n = sp.get_piece_size()
    gmask, sop = n + 1, n + 3
    eos = 2
    padded = (n + 5 + 63) // 64 * 64
    prefix = [gmask, sop]

    def enc(text):
        return sp.encode(text)

    # ---- examples: (ids, mask of positions whose token is a training target)
    maxlen = 256
    docs = []
    for t in poems + fortunes:
        ids = prefix + enc(t) + [eos]
        if len(ids) <= maxlen:
            docs.append((ids, [False] * 2 + [True] * (len(ids) - 2)))
    log(f"vocab {n} (+5 special, padded {padded}); {len(docs)} documents of <= {maxlen} tokens, "
        f"{sum(len(d[0]) for d in docs)} tokens")

    def prompt(query, history):
        s = "".join(f"[Round {i}]\n\n问：{q}\n\n答：{a}\n\n" for i, (q, a) in enumerate(history, 1))
        return s + f"[Round {len(history) + 1}]\n\n问：{query}\n\n答："

    short_poems = [p for p in poems if len(enc(p)) <= 120]

    def one_round():
        r = rng.random()
        if r < 0.04:
            return rng.choice(FIXED_ROUNDS)
        if r < 0.55:
            p = rng.choice(short_poems)
            return rng.choice(POEM_PROMPTS), p
        if r < 0.65:
            p = rng.choice(short_poems)
            author = p.split("\n")[1][len("作者："):]
            return rng.choice(AUTHOR_PROMPTS).format(a=author), p
        return rng.choice(FORTUNE_PROMPTS), rng.choice(fortunes)

    rounds = []
    skipped = 0
    while len(rounds) < args.rounds:
        history = [one_round()] if rng.random() < 0.2 else []
        q, a = one_round()
        p = prompt(q, history)
        p_ids = prefix + enc(p)
        full = prefix + enc(p + a) + [eos]
        if full[: len(p_ids)] != p_ids or len(full) > maxlen:
            skipped += 1
            continue
        rounds.append((full, [False] * len(p_ids) + [True] * (len(full) - len(p_ids))))
    log(f"{len(rounds)} chat rounds ({skipped} skipped: prompt/answer boundary inside a piece or too long)")

    config = {
        "_name_or_path": "chatglm2-tiny-poems",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "ffn_hidden_size": args.ffn,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": args.hidden,
        "kv_channels": 32,
        "layernorm_epsilon": 1e-05,
        "multi_query_attention": True,
        "multi_query_group_num": 2,
        "num_attention_heads": args.hidden // 32,
        "num_layers": args.layers,
        "original_rope": True,
        "padded_vocab_size": padded,
        "post_layer_norm": True,
        "rmsnorm": True,
        "seq_length": 512,
        "use_cache": True,
        "torch_dtype": "float16",
        "tie_word_embeddings": False,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    model = ChatGLM2(config)
    with torch.no_grad():  # ids the tokenizer cannot produce: rows that never win
        model.transformer.output_layer.weight[n + 5:] = 0.0
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {nparams} parameters, config {json.dumps({k: config[k] for k in ('hidden_size', 'num_layers', 'num_attention_heads', 'ffn_hidden_size', 'padded_vocab_size')})}")

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=0.01)
    loss_pre = train_phase(model, opt, docs, args.pretrain_steps, args.batch, 3e-3, rng, 0, "pretrain")
    # fine-tune: chat rounds, with a quarter of plain documents so the text itself is kept
    mix = rounds + docs[: len(rounds) // 3]
    loss_sft = train_phase(model, opt, mix, args.sft_steps, args.batch, 1e-3, rng, 0, "sft", warmup=30)
    model.eval()
    with torch.no_grad():
        model.transformer.output_layer.weight[n + 5:] = 0.0

    samples = {}
    for q in ["写一首诗", "tell me a fortune", "Hello! What can you do?", "写一首李白的诗"]:
        out = greedy(model, prefix + enc(prompt(q, [])), eos)
        samples[q] = sp.decode(out)
        log(f"{q!r} -> {samples[q]!r}")

    # held-out perplexity in f32 (documents one by one, as the model sees them)
    with torch.no_grad():
        nll, cnt = 0.0, 0
        for t in held_poems + held_fortunes:
            ids = torch.tensor([(prefix + enc(t))[:maxlen]])
            lp = torch.log_softmax(model(ids, torch.zeros_like(ids, dtype=torch.bool))[0, :-1], -1)
            nll -= lp.gather(1, ids[0, 1:, None]).sum().item()
            cnt += ids.shape[1] - 1
    log(f"held-out perplexity (per document, f32): {math.exp(nll / cnt):.2f} over {cnt} tokens")

    # ---- the checkpoint
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    sd["transformer.rotary_pos_emb.inv_freq"] = model.inv_freq.to(torch.float16)
    save_file(sd, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"name_or_path": "chatglm2-tiny-poems", "remove_space": False, "do_lower_case": False,
                   "tokenizer_class": "ChatGLMTokenizer"}, f, indent=2)
    info = {
        "seed": args.seed, "args": vars(args), "packages": versions, "poems": len(poems),
        "fortunes": len(fortunes), "heldout": [len(held_poems), len(held_fortunes)],
        "parameters": nparams, "final_loss": {"pretrain": loss_pre, "sft": loss_sft},
        "heldout_ppl_f32": math.exp(nll / cnt), "samples": samples,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "sentencepiece": spm.__version__, "numpy": np.__version__},
        "seconds": round(time.time() - t_start),
    }
    with open(os.path.join(args.out, "train_info.json"), "w") as f:
        json.dump(info, f, indent=2, ensure_ascii=False)
    log(f"wrote {args.out} in {info['seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
