/*
 * chat.c: a command-line chat with a ChatGLM model through the C API (include/chatglm.h).
 *
 *   chat -m MODEL [options] [MESSAGE...]
 *
 * Each MESSAGE is one user turn of the same conversation; without messages, each line read
 * from standard input is one. Replies are streamed to standard output, one line each.
 *
 * Options:
 *   -m PATH                the GGUF model file (required)
 *   -n N                   most new tokens per reply (default 512)
 *   -c N                   context size (default 2048, capped by the model's)
 *   -t N                   threads (default: all cores)
 *   --temp T               temperature, 0 = greedy (default 0.95)
 *   --top-k K              top-k, 0 = off (default 0)
 *   --top-p P              top-p (default 0.7)
 *   --repeat-penalty R     repetition penalty (default 1)
 *   --seed S               sampler seed (default 0)
 *   --kv-f32               keep the KV cache in f32 (default f16)
 *   --system TEXT          a system prompt before the first message (ChatGLM3 models)
 *   --history Q A          a past round (user message Q, reply A) before the first message;
 *                          repeat for several rounds
 *   --complete             continue each MESSAGE as raw text instead of chatting
 *   --stats                print token counts and speeds to standard error
 *
 * Build (from the repository root, after `cargo build --release`):
 *   cc -std=c99 -O2 examples/c/chat.c -Iinclude target/release/libchatglm.a \
 *      -lpthread -ldl -lm -o chat
 */

#include "chatglm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The text of the reply being generated, as the callback received it. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} text_buf;

/* Streams one piece to stdout and keeps a copy (to check it against the returned reply). */
static int on_piece(const char *piece, size_t len, void *user_data) {
    text_buf *buf = (text_buf *)user_data;
    if (buf->len + len + 1 > buf->cap) {
        size_t cap = (buf->len + len + 1) * 2;
        char *data = (char *)realloc(buf->data, cap);
        if (data == NULL) {
            return 1; /* out of memory: stop generating */
        }
        buf->data = data;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, piece, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int fail(const char *what, chatglm_status status) {
    fprintf(stderr, "chat: %s failed: %s: %s\n", what, chatglm_status_name((int)status),
            chatglm_last_error());
    return 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: chat -m MODEL [-n N] [-c N] [-t N] [--temp T] [--top-k K] [--top-p P]\n"
            "            [--repeat-penalty R] [--seed S] [--kv-f32] [--system TEXT]\n"
            "            [--history Q A]... [--complete] [--stats] [MESSAGE...]\n");
}

/* Everything the command line says. */
#define MAX_HISTORY 16

typedef struct {
    const char *model_path;
    /* The conversation before the first message: a system prompt, then rounds. */
    chatglm_message history[1 + 2 * MAX_HISTORY + 1];
    size_t n_history;
    int complete;
    int stats;
    chatglm_model_options model;
    chatglm_generate_options gen;
    char **messages;
    int n_messages;
} args;

static int parse_args(int argc, char **argv, args *a) {
    int i;
    a->model_path = NULL;
    a->n_history = 0;
    a->complete = 0;
    a->stats = 0;
    a->model = chatglm_model_options_default();
    a->gen = chatglm_generate_options_default();
    a->messages = argv + argc;
    a->n_messages = 0;
    for (i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--kv-f32") == 0) {
            a->model.kv_type = CHATGLM_KV_F32;
        } else if (strcmp(opt, "--complete") == 0) {
            a->complete = 1;
        } else if (strcmp(opt, "--stats") == 0) {
            a->stats = 1;
        } else if (opt[0] == '-' && opt[1] != '\0') {
            if (val == NULL) {
                fprintf(stderr, "chat: %s needs a value\n", opt);
                return 0;
            }
            i++;
            if (strcmp(opt, "-m") == 0) {
                a->model_path = val;
            } else if (strcmp(opt, "--system") == 0) {
                if (a->n_history != 0) {
                    fprintf(stderr, "chat: --system comes once, before any --history\n");
                    return 0;
                }
                a->history[a->n_history].role = CHATGLM_ROLE_SYSTEM;
                a->history[a->n_history++].content = val;
            } else if (strcmp(opt, "--history") == 0) {
                if (i + 1 >= argc || a->n_history + 2 > 1 + 2 * MAX_HISTORY) {
                    fprintf(stderr, "chat: --history needs two values (at most %d times)\n",
                            MAX_HISTORY);
                    return 0;
                }
                a->history[a->n_history].role = CHATGLM_ROLE_USER;
                a->history[a->n_history++].content = val;
                a->history[a->n_history].role = CHATGLM_ROLE_ASSISTANT;
                a->history[a->n_history++].content = argv[++i];
            } else if (strcmp(opt, "-n") == 0) {
                a->gen.max_new_tokens = (uint32_t)strtoul(val, NULL, 10);
            } else if (strcmp(opt, "-c") == 0) {
                a->model.n_ctx = (uint32_t)strtoul(val, NULL, 10);
            } else if (strcmp(opt, "-t") == 0) {
                a->model.n_threads = (uint32_t)strtoul(val, NULL, 10);
            } else if (strcmp(opt, "--temp") == 0) {
                a->gen.temperature = strtof(val, NULL);
            } else if (strcmp(opt, "--top-k") == 0) {
                a->gen.top_k = (int32_t)strtol(val, NULL, 10);
            } else if (strcmp(opt, "--top-p") == 0) {
                a->gen.top_p = strtof(val, NULL);
            } else if (strcmp(opt, "--repeat-penalty") == 0) {
                a->gen.repeat_penalty = strtof(val, NULL);
            } else if (strcmp(opt, "--seed") == 0) {
                a->gen.seed = (uint64_t)strtoull(val, NULL, 10);
            } else {
                fprintf(stderr, "chat: unknown option %s\n", opt);
                return 0;
            }
        } else {
            a->messages = argv + i;
            a->n_messages = argc - i;
            break;
        }
    }
    if (a->model_path == NULL) {
        usage();
        return 0;
    }
    return 1;
}

/* One turn: generates the reply to `message`, streaming it, and checks that the returned
 * reply is exactly what was streamed. Returns 0 on success. */
static int turn(chatglm_session *session, args *a, const char *message, int first) {
    text_buf streamed = {NULL, 0, 0};
    char *reply = NULL;
    chatglm_status st;
    int rc = 0;
    if (a->complete) {
        st = chatglm_complete(session, message, &a->gen, on_piece, &streamed, &reply);
    } else if (first && a->n_history > 0) {
        /* The given conversation, then this message. */
        a->history[a->n_history].role = CHATGLM_ROLE_USER;
        a->history[a->n_history].content = message;
        st = chatglm_respond(session, a->history, a->n_history + 1, &a->gen, on_piece,
                             &streamed, &reply);
    } else {
        st = chatglm_chat(session, message, &a->gen, on_piece, &streamed, &reply);
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (st != CHATGLM_OK) {
        rc = fail("generation", st);
    } else if (strcmp(reply, streamed.data != NULL ? streamed.data : "") != 0) {
        fprintf(stderr, "chat: the returned reply differs from the streamed text\n");
        rc = 1;
    } else if (a->stats) {
        chatglm_generation_stats s;
        st = chatglm_session_last_stats(session, &s);
        if (st != CHATGLM_OK) {
            rc = fail("chatglm_session_last_stats", st);
        } else {
            fprintf(stderr,
                    "[prompt %zu tokens (%zu reused) in %.1f ms, %zu generated, "
                    "%.1f ms decoding, stop %d]\n",
                    s.n_prompt_tokens, s.n_reused_tokens, s.prefill_ms, s.n_generated_tokens,
                    s.decode_ms, (int)s.stop_reason);
        }
    }
    chatglm_string_free(reply);
    free(streamed.data);
    return rc;
}

/* Reads one line of any length from `in` (without its newline); NULL at the end. */
static char *read_line(FILE *in) {
    size_t len = 0, cap = 256;
    char *line = (char *)malloc(cap);
    int c;
    if (line == NULL) {
        return NULL;
    }
    while ((c = fgetc(in)) != EOF && c != '\n') {
        if (len + 2 > cap) {
            char *bigger = (char *)realloc(line, cap * 2);
            if (bigger == NULL) {
                free(line);
                return NULL;
            }
            line = bigger;
            cap *= 2;
        }
        line[len++] = (char)c;
    }
    if (c == EOF && len == 0) {
        free(line);
        return NULL;
    }
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    line[len] = '\0';
    return line;
}

int main(int argc, char **argv) {
    args a;
    chatglm_model *model = NULL;
    chatglm_session *session = NULL;
    chatglm_model_info info;
    chatglm_status st;
    int rc = 0, i;

    if (!parse_args(argc, argv, &a)) {
        return 2;
    }
    st = chatglm_model_load(a.model_path, &a.model, &model);
    if (st != CHATGLM_OK) {
        return fail("chatglm_model_load", st);
    }
    st = chatglm_model_get_info(model, &info);
    if (st == CHATGLM_OK && a.stats) {
        fprintf(stderr,
                "[chatglm %s: ChatGLM%d, %zu layers, vocab %zu, context %zu of %zu, "
                "%u threads, %s kernels]\n",
                chatglm_version(), (int)info.family, info.n_layers, info.vocab_size, info.n_ctx,
                info.context_length, info.n_threads, info.kernels);
    }
    if (st == CHATGLM_OK) {
        st = chatglm_session_new(model, &session);
    }
    if (st != CHATGLM_OK) {
        rc = fail("loading", st);
    } else if (a.n_messages > 0) {
        for (i = 0; i < a.n_messages && rc == 0; i++) {
            rc = turn(session, &a, a.messages[i], i == 0);
        }
    } else {
        char *line;
        int first = 1;
        while (rc == 0 && (line = read_line(stdin)) != NULL) {
            rc = turn(session, &a, line, first);
            first = 0;
            free(line);
        }
    }
    chatglm_session_free(session);
    chatglm_model_free(model);
    return rc;
}
