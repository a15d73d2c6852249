#!/usr/bin/env python3
"""A command-line chat with a ChatGLM model through the C API, using only ctypes.

    python3 examples/python/chat.py -m MODEL [options] [MESSAGE...]

Each MESSAGE is one user turn of the same conversation; without messages, each line of
standard input is one. Replies are streamed to standard output, one line each (as
examples/c/chat.c does). The library is found with --lib, else $CHATGLM_LIB, else
target/release/libchatglm.so (or libchatglm.dylib, or chatglm.dll) of this repository, else
the system's search path (where tools/install.sh puts it, or beside the script on Windows).
"""

import argparse
import ctypes
import ctypes.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Mirrors of include/chatglm.h.
CHATGLM_OK = 0
CHATGLM_KV_F16 = 0
CHATGLM_KV_F32 = 1


class ModelOptions(ctypes.Structure):
    _fields_ = [
        ("n_threads", ctypes.c_uint32),
        ("n_ctx", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint32),
        ("kv_type", ctypes.c_int32),
        ("no_mmap", ctypes.c_int32),
    ]


class ModelInfo(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_int32),
        ("context_length", ctypes.c_size_t),
        ("n_ctx", ctypes.c_size_t),
        ("vocab_size", ctypes.c_size_t),
        ("n_layers", ctypes.c_size_t),
        ("hidden_size", ctypes.c_size_t),
        ("n_threads", ctypes.c_uint32),
        ("kernels", ctypes.c_char_p),
    ]


class GenerateOptions(ctypes.Structure):
    _fields_ = [
        ("max_new_tokens", ctypes.c_uint32),
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("repeat_penalty", ctypes.c_float),
        ("seed", ctypes.c_uint64),
    ]


PIECE_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t, ctypes.c_void_p
)


class ChatGLMError(Exception):
    """A failed call: the status name and the library's message."""


def find_library(explicit):
    candidates = [explicit, os.environ.get("CHATGLM_LIB")]
    names = ("libchatglm.so", "libchatglm.dylib", "chatglm.dll")
    for name in names:
        candidates.append(os.path.join(ROOT, "target", "release", name))
    # Cross-built for Windows from Linux (`--target x86_64-pc-windows-gnu`).
    candidates.append(
        os.path.join(ROOT, "target", "x86_64-pc-windows-gnu", "release", "chatglm.dll")
    )
    # On Windows find_library searches PATH for chatglm.dll; elsewhere the linker's paths.
    candidates.append(ctypes.util.find_library("chatglm"))
    for path in candidates:
        if path and (os.path.exists(path) or not os.path.dirname(path)):
            return path
    sys.exit("chat.py: libchatglm not found (build it, or pass --lib)")


def load_library(path):
    lib = ctypes.CDLL(path)
    p = ctypes.POINTER
    c_void_pp = p(ctypes.c_void_p)
    signatures = {
        "chatglm_last_error": (ctypes.c_char_p, []),
        "chatglm_status_name": (ctypes.c_char_p, [ctypes.c_int]),
        "chatglm_string_free": (None, [ctypes.c_void_p]),
        "chatglm_version": (ctypes.c_char_p, []),
        "chatglm_model_options_default": (ModelOptions, []),
        "chatglm_model_load": (ctypes.c_int, [ctypes.c_char_p, p(ModelOptions), c_void_pp]),
        "chatglm_model_free": (None, [ctypes.c_void_p]),
        "chatglm_model_get_info": (ctypes.c_int, [ctypes.c_void_p, p(ModelInfo)]),
        "chatglm_generate_options_default": (GenerateOptions, []),
        "chatglm_session_new": (ctypes.c_int, [ctypes.c_void_p, c_void_pp]),
        "chatglm_session_free": (None, [ctypes.c_void_p]),
        "chatglm_chat": (
            ctypes.c_int,
            [
                ctypes.c_void_p,
                ctypes.c_char_p,
                p(GenerateOptions),
                PIECE_CALLBACK,
                ctypes.c_void_p,
                c_void_pp,
            ],
        ),
    }
    signatures["chatglm_complete"] = signatures["chatglm_chat"]
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


class ChatGLM:
    """A model and one session on it; freed by close() (or a with block)."""

    def __init__(self, lib, path, options):
        self.lib = lib
        self.model = ctypes.c_void_p()
        self.session = ctypes.c_void_p()
        self._check(lib.chatglm_model_load(os.fsencode(path), options, ctypes.byref(self.model)))
        self._check(lib.chatglm_session_new(self.model, ctypes.byref(self.session)))

    def _check(self, status):
        if status != CHATGLM_OK:
            name = self.lib.chatglm_status_name(status).decode()
            raise ChatGLMError(f"{name}: {self.lib.chatglm_last_error().decode()}")

    def info(self):
        info = ModelInfo()
        self._check(self.lib.chatglm_model_get_info(self.model, ctypes.byref(info)))
        return info

    def generate(self, text, options, on_piece, complete=False):
        """Streams the reply to `text` through on_piece(str) and returns it."""

        def callback(piece, length, _user_data):
            on_piece(ctypes.string_at(piece, length).decode("utf-8"))
            return 0

        reply = ctypes.c_void_p()
        fn = self.lib.chatglm_complete if complete else self.lib.chatglm_chat
        status = fn(
            self.session,
            text.encode("utf-8"),
            ctypes.byref(options),
            PIECE_CALLBACK(callback),
            None,
            ctypes.byref(reply),
        )
        try:
            self._check(status)
            return ctypes.string_at(reply.value).decode("utf-8")
        finally:
            self.lib.chatglm_string_free(reply)

    def close(self):
        self.lib.chatglm_session_free(self.session)
        self.lib.chatglm_model_free(self.model)
        self.session = self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", dest="model", required=True, help="the GGUF model file")
    ap.add_argument("--lib", help="path of libchatglm.so")
    ap.add_argument("-n", type=int, default=512, help="most new tokens per reply")
    ap.add_argument("-c", type=int, default=0, help="context size (0: default)")
    ap.add_argument("-t", type=int, default=0, help="threads (0: all cores)")
    ap.add_argument("--temp", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=0.7)
    ap.add_argument("--repeat-penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kv-f32", action="store_true")
    ap.add_argument("--complete", action="store_true", help="continue raw text, no chat")
    ap.add_argument("messages", nargs="*")
    args = ap.parse_args()

    lib = load_library(find_library(args.lib))
    mo = lib.chatglm_model_options_default()
    mo.n_ctx, mo.n_threads = args.c, args.t
    mo.kv_type = CHATGLM_KV_F32 if args.kv_f32 else CHATGLM_KV_F16
    go = lib.chatglm_generate_options_default()
    go.max_new_tokens, go.temperature, go.top_k = args.n, args.temp, args.top_k
    go.top_p, go.repeat_penalty, go.seed = args.top_p, args.repeat_penalty, args.seed

    out = sys.stdout.buffer
    streamed = []

    def on_piece(piece):
        streamed.append(piece)
        out.write(piece.encode("utf-8"))
        out.flush()

    try:
        with ChatGLM(lib, args.model, mo) as chat:
            info = chat.info()
            print(
                f"chatglm {lib.chatglm_version().decode()}: ChatGLM{info.family}, "
                f"{info.n_layers} layers, {info.kernels.decode()} kernels",
                file=sys.stderr,
            )
            messages = args.messages or (line.rstrip("\r\n") for line in sys.stdin)
            for message in messages:
                streamed.clear()
                reply = chat.generate(message, go, on_piece, complete=args.complete)
                out.write(b"\n")
                out.flush()
                if reply != "".join(streamed):
                    sys.exit("chat.py: the returned reply differs from the streamed text")
    except ChatGLMError as e:
        sys.exit(f"chat.py: {e}")


if __name__ == "__main__":
    main()
