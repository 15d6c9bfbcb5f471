/* Greedy decoding with llama.cpp, token ids in and out, for nose's equality tests.
 *
 * usage: nose-greedy MODEL.gguf N_PREDICT N_THREADS KV_TYPE(f32|f16) < prompts
 *
 * stdin holds prompts, each as "<byte count>\n<bytes>". For each prompt the program prints
 *   P <prompt token ids, as llama.cpp tokenizes the text (special tokens parsed, no BOS added)>
 *   G <greedy token ids, at most N_PREDICT, stopping after an end-of-generation token>
 * with the memory cleared between prompts. The argmax is taken over llama.cpp's own logits:
 * no sampler, so nothing but the engine's arithmetic decides a token.
 */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char * text, void * data) {
    (void) data;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int argmax(const float * logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf N_PREDICT N_THREADS f32|f16 < prompts\n", argv[0]);
        return 2;
    }
    const int n_predict = atoi(argv[2]);
    const int n_threads = atoi(argv[3]);
    const enum ggml_type kv = strcmp(argv[4], "f32") == 0 ? GGML_TYPE_F32 : GGML_TYPE_F16;

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "error: llama.cpp could not load %s\n", argv[1]); return 1; }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 4096;
    cp.n_batch = 4096;
    cp.n_ubatch = 512;
    cp.n_threads = cp.n_threads_batch = n_threads;
    cp.type_k = cp.type_v = kv;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "error: llama.cpp could not create a context\n"); return 1; }

    long size;
    while (scanf("%ld", &size) == 1) {
        getchar();  /* the newline after the count */
        char * text = malloc(size + 1);
        if (!text || fread(text, 1, size, stdin) != (size_t) size) { fprintf(stderr, "error: short prompt\n"); return 1; }
        int cap = (int) size + 16;
        llama_token * tokens = malloc(sizeof(llama_token) * (cap + n_predict));
        int n = llama_tokenize(vocab, text, (int) size, tokens, cap, false, true);
        if (n < 0) { fprintf(stderr, "error: tokenization failed\n"); return 1; }
        printf("P");
        for (int i = 0; i < n; i++) printf(" %d", tokens[i]);
        printf("\nG");
        llama_memory_clear(llama_get_memory(ctx), true);
        struct llama_batch batch = llama_batch_get_one(tokens, n);
        for (int step = 0; step < n_predict; step++) {
            if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "error: llama_decode failed\n"); return 1; }
            llama_token next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
            printf(" %d", next);
            if (llama_vocab_is_eog(vocab, next)) break;
            tokens[n] = next;
            batch = llama_batch_get_one(&tokens[n], 1);
            n++;
        }
        printf("\n");
        fflush(stdout);
        free(tokens);
        free(text);
    }
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
