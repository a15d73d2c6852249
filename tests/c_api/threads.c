/*
 * threads.c: sessions on one shared model give the same replies whether they run one after
 * the other or at the same time in several threads. Run by tests/c_api.rs:
 *
 *   threads MODEL MAX_NEW_TOKENS MESSAGE...
 *
 * Worker w (of WORKERS) opens a session on the shared model and chats every MESSAGE in turn,
 * sampling at temperature 0.8 with seed w + 1 (so the workers' replies differ). The workers run
 * sequentially once, then concurrently ROUNDS times; every concurrent reply must equal the
 * sequential one. The sequential replies are printed, "worker W: REPLY" per line, for the test
 * to compare with the Rust API's; the exit status is the number of mismatches (or 100 on
 * error).
 */

#include "chatglm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKERS 3
#define ROUNDS 2
#define MAX_MESSAGES 8

typedef struct {
    const chatglm_model *model;
    int id;
    uint32_t max_new_tokens;
    char **messages;
    int n_messages;
    char *replies[MAX_MESSAGES];
    chatglm_status status;
} worker;

static void *run_worker(void *arg) {
    worker *w = (worker *)arg;
    chatglm_session *session = NULL;
    chatglm_generate_options opts = chatglm_generate_options_default();
    int i;
    opts.max_new_tokens = w->max_new_tokens;
    opts.temperature = 0.8f;
    opts.top_k = 40;
    opts.top_p = 0.9f;
    opts.seed = (uint64_t)w->id + 1;
    w->status = chatglm_session_new(w->model, &session);
    for (i = 0; i < w->n_messages && w->status == CHATGLM_OK; i++) {
        w->status = chatglm_chat(session, w->messages[i], &opts, NULL, NULL, &w->replies[i]);
    }
    if (w->status != CHATGLM_OK) {
        fprintf(stderr, "worker %d: %s: %s\n", w->id, chatglm_status_name((int)w->status),
                chatglm_last_error());
    }
    chatglm_session_free(session);
    return NULL;
}

static void init(worker *w, const chatglm_model *model, int id, char **argv, int argc) {
    memset(w, 0, sizeof *w);
    w->model = model;
    w->id = id;
    w->max_new_tokens = (uint32_t)strtoul(argv[2], NULL, 10);
    w->messages = argv + 3;
    w->n_messages = argc - 3;
}

static void release(worker *w) {
    int i;
    for (i = 0; i < MAX_MESSAGES; i++) {
        chatglm_string_free(w->replies[i]);
        w->replies[i] = NULL;
    }
}

int main(int argc, char **argv) {
    chatglm_model *model = NULL;
    worker sequential[WORKERS], concurrent[WORKERS];
    pthread_t threads[WORKERS];
    int w, i, round, mismatches = 0;

    if (argc < 4 || argc - 3 > MAX_MESSAGES) {
        fprintf(stderr, "usage: threads MODEL MAX_NEW_TOKENS MESSAGE... (at most %d)\n",
                MAX_MESSAGES);
        return 100;
    }
    if (chatglm_model_load(argv[1], NULL, &model) != CHATGLM_OK) {
        fprintf(stderr, "load: %s\n", chatglm_last_error());
        return 100;
    }
    for (w = 0; w < WORKERS; w++) {
        init(&sequential[w], model, w, argv, argc);
        run_worker(&sequential[w]);
        if (sequential[w].status != CHATGLM_OK) {
            return 100;
        }
        for (i = 0; i < sequential[w].n_messages; i++) {
            printf("worker %d: %s\n", w, sequential[w].replies[i]);
        }
    }
    for (round = 0; round < ROUNDS; round++) {
        for (w = 0; w < WORKERS; w++) {
            init(&concurrent[w], model, w, argv, argc);
            if (pthread_create(&threads[w], NULL, run_worker, &concurrent[w]) != 0) {
                fprintf(stderr, "pthread_create failed\n");
                return 100;
            }
        }
        for (w = 0; w < WORKERS; w++) {
            pthread_join(threads[w], NULL);
        }
        for (w = 0; w < WORKERS; w++) {
            if (concurrent[w].status != CHATGLM_OK) {
                return 100;
            }
            for (i = 0; i < concurrent[w].n_messages; i++) {
                if (strcmp(concurrent[w].replies[i], sequential[w].replies[i]) != 0) {
                    fprintf(stderr, "round %d, worker %d, message %d: \"%s\" != \"%s\"\n", round,
                            w, i, concurrent[w].replies[i], sequential[w].replies[i]);
                    mismatches++;
                }
            }
            release(&concurrent[w]);
        }
    }
    for (w = 0; w < WORKERS; w++) {
        release(&sequential[w]);
    }
    chatglm_model_free(model);
    return mismatches;
}
