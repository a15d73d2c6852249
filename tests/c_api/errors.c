/*
 * errors.c: bad calls through the C API return the right status with a message, and never
 * crash. Run by tests/c_api.rs (also under valgrind):
 *
 *   errors GOOD_MODEL MISSING_PATH GARBAGE_FILE TRUNCATED_MODEL
 *
 * Prints one line per check; the exit status is the number of failed checks.
 */

#include "chatglm.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

/* Checks that `got` is `want` and, for a failure, that the thread's message contains
 * `needle`. */
static void expect(const char *what, chatglm_status got, chatglm_status want,
                   const char *needle) {
    const char *msg = chatglm_last_error();
    int ok = got == want;
    if (want == CHATGLM_OK) {
        ok = ok && msg[0] == '\0';
    } else {
        ok = ok && msg[0] != '\0' && (needle == NULL || strstr(msg, needle) != NULL);
    }
    printf("%s %s: %s: %s\n", ok ? "ok" : "FAIL", what, chatglm_status_name((int)got), msg);
    if (!ok) {
        printf("     expected %s with a message containing \"%s\"\n",
               chatglm_status_name((int)want), needle ? needle : "");
        failures++;
    }
}

static void expect_true(const char *what, int cond) {
    printf("%s %s\n", cond ? "ok" : "FAIL", what);
    if (!cond) {
        failures++;
    }
}

/* A thread that reads its own last error: "" although the main thread's last call failed. */
static void *read_last_error(void *arg) {
    *(int *)arg = chatglm_last_error()[0] == '\0';
    return NULL;
}

/* What the re-entrant callback saw. */
typedef struct {
    chatglm_session *session;
    chatglm_status chat;
    chatglm_status reset;
    int calls;
} reentry;

static int reenter(const char *piece, size_t len, void *user_data) {
    reentry *r = (reentry *)user_data;
    char *reply = (char *)1;
    (void)piece;
    (void)len;
    if (r->calls++ == 0) {
        r->chat = chatglm_chat(r->session, "again", NULL, NULL, NULL, &reply);
        r->reset = chatglm_session_reset(r->session);
    }
    return 0;
}

static int stop_at_once(const char *piece, size_t len, void *user_data) {
    (void)piece;
    *(size_t *)user_data += len;
    return 1;
}

int main(int argc, char **argv) {
    const char *good, *missing, *garbage, *truncated;
    chatglm_model *model = (chatglm_model *)1;
    chatglm_model *small = NULL;
    chatglm_session *session = (chatglm_session *)1;
    chatglm_session *other = NULL;
    chatglm_model_options mo;
    chatglm_generate_options go;
    chatglm_model_info info;
    chatglm_generation_stats stats;
    chatglm_message msgs[3];
    chatglm_token ids[4];
    size_t n = 0;
    char *text = (char *)1;
    char long_message[4000];
    const char bad_utf8[] = {'h', 'i', (char)0xff, (char)0xfe, 0};
    pthread_t thread;
    int thread_clean = 0;

    if (argc != 5) {
        fprintf(stderr, "usage: errors GOOD_MODEL MISSING GARBAGE TRUNCATED\n");
        return 100;
    }
    good = argv[1];
    missing = argv[2];
    garbage = argv[3];
    truncated = argv[4];

    /* Loading. */
    expect("load NULL path", chatglm_model_load(NULL, NULL, &model), CHATGLM_ERR_INVALID_ARGUMENT,
           "`path` is NULL");
    expect_true("failed load sets *model_out to NULL", model == NULL);
    expect("load NULL model_out", chatglm_model_load(good, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "model_out");
    expect("load missing file", chatglm_model_load(missing, NULL, &model), CHATGLM_ERR_IO,
           missing);
    expect("load garbage", chatglm_model_load(garbage, NULL, &model), CHATGLM_ERR_BAD_FILE,
           "GGUF");
    expect("load truncated", chatglm_model_load(truncated, NULL, &model), CHATGLM_ERR_BAD_FILE,
           "truncated");
    expect_true("failed loads leave no model", model == NULL);

    pthread_create(&thread, NULL, read_last_error, &thread_clean);
    pthread_join(thread, NULL);
    expect_true("the last error is per thread", thread_clean);

    mo = chatglm_model_options_default();
    mo.kv_type = 7;
    expect("load bad kv_type", chatglm_model_load(good, &mo, &model),
           CHATGLM_ERR_INVALID_ARGUMENT, "kv_type 7");
    mo = chatglm_model_options_default();
    mo.n_ctx = 1u << 30;
    expect("load n_ctx too large", chatglm_model_load(good, &mo, &model),
           CHATGLM_ERR_INVALID_ARGUMENT, "n_ctx");
    expect("load good", chatglm_model_load(good, NULL, &model), CHATGLM_OK, NULL);
    mo = chatglm_model_options_default();
    mo.n_ctx = 24;
    expect("load with a small context", chatglm_model_load(good, &mo, &small), CHATGLM_OK, NULL);

    /* Info, sessions. */
    expect("info NULL model", chatglm_model_get_info(NULL, &info), CHATGLM_ERR_INVALID_ARGUMENT,
           "`model` is NULL");
    expect("info NULL out", chatglm_model_get_info(model, NULL), CHATGLM_ERR_INVALID_ARGUMENT,
           "info_out");
    expect("info", chatglm_model_get_info(model, &info), CHATGLM_OK, NULL);
    expect_true("info: kernels named", info.kernels != NULL && info.kernels[0] != '\0');
    expect("session NULL model", chatglm_session_new(NULL, &session),
           CHATGLM_ERR_INVALID_ARGUMENT, "`model` is NULL");
    expect_true("failed session_new sets *session_out to NULL", session == NULL);
    expect("session NULL out", chatglm_session_new(model, NULL), CHATGLM_ERR_INVALID_ARGUMENT,
           "session_out");
    expect("session", chatglm_session_new(model, &session), CHATGLM_OK, NULL);
    expect("stats before generating", chatglm_session_last_stats(session, &stats), CHATGLM_OK,
           NULL);
    expect_true("stats: no generation yet", stats.stop_reason == CHATGLM_STOP_NONE);
    expect("stats NULL out", chatglm_session_last_stats(session, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "stats_out");

    /* Generation with bad arguments. */
    go = chatglm_generate_options_default();
    go.max_new_tokens = 4;
    expect("chat NULL session", chatglm_chat(NULL, "hi", &go, NULL, NULL, &text),
           CHATGLM_ERR_INVALID_ARGUMENT, "`session` is NULL");
    expect_true("failed chat sets *reply_out to NULL", text == NULL);
    expect("chat NULL message", chatglm_chat(session, NULL, &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "`message` is NULL");
    expect("chat invalid UTF-8", chatglm_chat(session, bad_utf8, &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "not valid UTF-8 (bad byte at offset 2)");
    expect("complete invalid UTF-8", chatglm_complete(session, bad_utf8, &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "`text` is not valid UTF-8");
    expect("reset NULL", chatglm_session_reset(NULL), CHATGLM_ERR_INVALID_ARGUMENT, "session");
    go.max_new_tokens = 0;
    expect("max_new_tokens 0", chatglm_chat(session, "hi", &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "max_new_tokens");
    go = chatglm_generate_options_default();
    go.temperature = -1.0f;
    expect("negative temperature", chatglm_chat(session, "hi", &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "temperature");
    go = chatglm_generate_options_default();
    go.top_p = 0.0f;
    expect("top_p 0", chatglm_chat(session, "hi", &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "top_p");
    go = chatglm_generate_options_default();
    go.top_k = -1;
    expect("negative top_k", chatglm_chat(session, "hi", &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "top_k");
    go = chatglm_generate_options_default();
    go.max_new_tokens = 4;

    msgs[0].role = CHATGLM_ROLE_USER;
    msgs[0].content = "hi";
    expect("respond NULL messages", chatglm_respond(session, NULL, 1, &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "`messages` is NULL");
    expect("respond no message", chatglm_respond(session, msgs, 0, &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "no message");
    msgs[0].role = 9;
    expect("respond bad role", chatglm_respond(session, msgs, 1, &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "messages[0].role 9");
    msgs[0].role = CHATGLM_ROLE_USER;
    msgs[0].content = bad_utf8;
    expect("respond invalid UTF-8", chatglm_respond(session, msgs, 1, &go, NULL, NULL, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "messages[0].content");
    msgs[0].content = "hi";
    msgs[1].role = CHATGLM_ROLE_ASSISTANT;
    msgs[1].content = "hello";
    expect("respond ending with the assistant",
           chatglm_respond(session, msgs, 2, &go, NULL, NULL, NULL), CHATGLM_ERR_INVALID_ARGUMENT,
           "must end with a user message");
    msgs[0].role = CHATGLM_ROLE_SYSTEM;
    msgs[0].content = "be brief";
    msgs[1].role = CHATGLM_ROLE_USER;
    msgs[1].content = "hi";
    if (info.family == 2) {
        expect("respond with a system prompt (ChatGLM2)",
               chatglm_respond(session, msgs, 2, &go, NULL, NULL, NULL),
               CHATGLM_ERR_INVALID_ARGUMENT, "has no system role");
    }

    /* The context: a message that cannot fit. */
    memset(long_message, 'a', sizeof long_message - 1);
    long_message[sizeof long_message - 1] = '\0';
    for (n = 0; n + 2 < sizeof long_message; n += 2) {
        long_message[n + 1] = ' ';
    }
    expect("session on the small model", chatglm_session_new(small, &other), CHATGLM_OK, NULL);
    expect("chat longer than the context", chatglm_chat(other, long_message, &go, NULL, NULL, NULL),
           CHATGLM_ERR_CONTEXT_FULL, "context");
    chatglm_session_free(other);
    other = NULL;

    /* A callback that calls back into its own session is told the session is busy. */
    {
        reentry r;
        r.session = session;
        r.chat = CHATGLM_OK;
        r.reset = CHATGLM_OK;
        r.calls = 0;
        go.temperature = 0.0f;
        expect("chat with a re-entrant callback",
               chatglm_chat(session, "hello", &go, reenter, &r, &text), CHATGLM_OK, NULL);
        expect_true("the callback ran", r.calls > 0);
        expect_true("re-entrant chat: CHATGLM_ERR_BUSY", r.chat == CHATGLM_ERR_BUSY);
        expect_true("re-entrant reset: CHATGLM_ERR_BUSY", r.reset == CHATGLM_ERR_BUSY);
        chatglm_string_free(text);
        text = NULL;
    }

    /* Stopping from the callback succeeds with the text so far. */
    {
        size_t streamed = 0;
        expect("reset", chatglm_session_reset(session), CHATGLM_OK, NULL);
        expect("chat stopped by the callback",
               chatglm_chat(session, "hello", &go, stop_at_once, &streamed, &text), CHATGLM_OK,
               NULL);
        expect("stats", chatglm_session_last_stats(session, &stats), CHATGLM_OK, NULL);
        expect_true("stop reason: cancelled", stats.stop_reason == CHATGLM_STOP_CANCELLED);
        expect_true("the reply is what was streamed", text != NULL && strlen(text) == streamed);
        chatglm_string_free(text);
        text = NULL;
    }

    /* Tokens. */
    expect("tokenize NULL model", chatglm_tokenize(NULL, "hi", 1, ids, 4, &n),
           CHATGLM_ERR_INVALID_ARGUMENT, "`model` is NULL");
    expect("tokenize NULL text", chatglm_tokenize(model, NULL, 1, ids, 4, &n),
           CHATGLM_ERR_INVALID_ARGUMENT, "`text` is NULL");
    expect("tokenize invalid UTF-8", chatglm_tokenize(model, bad_utf8, 1, ids, 4, &n),
           CHATGLM_ERR_INVALID_ARGUMENT, "UTF-8");
    expect("tokenize NULL count", chatglm_tokenize(model, "hi", 1, ids, 4, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "n_tokens_out");
    expect("tokenize NULL buffer", chatglm_tokenize(model, "hi", 1, NULL, 4, &n),
           CHATGLM_ERR_INVALID_ARGUMENT, "`tokens` is NULL");
    n = 0;
    expect("tokenize into a small buffer",
           chatglm_tokenize(model, "hello there, how are you", 1, ids, 4, &n),
           CHATGLM_ERR_BUFFER_TOO_SMALL, "the buffer holds 4");
    expect_true("the count needed is written", n > 4);
    expect("tokenize empty", chatglm_tokenize(model, "", 0, NULL, 0, &n), CHATGLM_OK, NULL);
    expect_true("empty text: no token", n == 0);
    ids[0] = (chatglm_token)info.vocab_size;
    expect("detokenize id out of range", chatglm_detokenize(model, ids, 1, &text),
           CHATGLM_ERR_INVALID_ARGUMENT, "out of range");
    expect_true("failed detokenize sets *text_out to NULL", text == NULL);
    expect("detokenize NULL ids", chatglm_detokenize(model, NULL, 1, &text),
           CHATGLM_ERR_INVALID_ARGUMENT, "`tokens` is NULL");
    expect("detokenize NULL out", chatglm_detokenize(model, ids, 0, NULL),
           CHATGLM_ERR_INVALID_ARGUMENT, "text_out");
    expect("detokenize nothing", chatglm_detokenize(model, NULL, 0, &text), CHATGLM_OK, NULL);
    expect_true("nothing decodes to \"\"", text != NULL && text[0] == '\0');
    chatglm_string_free(text);

    /* Statuses, frees. */
    expect_true("unknown status name",
                strcmp(chatglm_status_name(42), "CHATGLM_UNKNOWN_STATUS") == 0);
    expect_true("version", chatglm_version()[0] != '\0');
    chatglm_model_free(NULL);
    chatglm_session_free(NULL);
    chatglm_string_free(NULL);

    /* A session outlives a freed model. */
    chatglm_model_free(model);
    chatglm_model_free(small);
    expect("chat after the model was freed", chatglm_chat(session, "hi", &go, NULL, NULL, &text),
           CHATGLM_OK, NULL);
    chatglm_string_free(text);
    chatglm_session_free(session);

    printf("%d failed\n", failures);
    return failures;
}
