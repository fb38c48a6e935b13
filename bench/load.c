/* load.c - load time of a 1M x 128 float32 .npy and of a 100k-word x 300
 * word2vec text file, each against a floor measured in the same run: for the
 * .npy, read() of the same bytes into a buffer; for the text, strtof over
 * every value (what a loader without the fast exact path would pay just to
 * parse). Both files are generated here into $TMPDIR (or /tmp), read from the
 * page cache, and deleted at the end.
 *
 *   ./load [rows_npy dim_npy words dim_text]   (defaults 1000000 128 100000 300) */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "loader_internal.h"

#define RUNS 3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float next_normalish(void)
{
    /* xorshift64*, summed uniforms: values like trained embeddings, any
     * distribution works for timing */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        s += (float)((rng * 0x2545f4914f6cdd1dull) >> 40) / 16777216.0f - 0.5f;
    }
    return s * 0.3f;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static int make_npy(const char *path, int64_t rows, int64_t dim)
{
    struct matrix m;
    if (matrix_init(&m, rows, dim) != CORE_OK)
        return -1;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < dim; j++)
            matrix_row(&m, i)[j] = next_normalish();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = fd >= 0 ? npy_write_fd(fd, m.data, rows, dim, m.stride) : CORE_EIO;
    if (fd >= 0)
        close(fd);
    matrix_deinit(&m);
    return rc == CORE_OK ? 0 : -1;
}

/* Values printed as gensim prints float32 (shortest round trip, up to 9
 * significant digits): "%.9g" is the worst case of that. */
static int make_text(const char *path, int64_t words, int64_t dim)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%lld %lld\n", (long long)words, (long long)dim);
    for (int64_t i = 0; i < words; i++) {
        fprintf(f, "w%lld", (long long)i);
        for (int64_t j = 0; j < dim; j++)
            fprintf(f, " %.9g", (double)next_normalish());
        fputc('\n', f);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static double time_load(const char *path, enum loader_format fmt)
{
    double best = 1e30;
    for (int r = 0; r < RUNS; r++) {
        struct loader_opts o = {.format = fmt};
        struct matrix m;
        struct vocab *v;
        char err[512];
        double t0 = now();
        int rc = loader_load(path, &o, &m, &v, err, sizeof(err));
        double t = now() - t0;
        if (rc != CORE_OK) {
            fprintf(stderr, "load failed: %s\n", err);
            exit(1);
        }
        matrix_deinit(&m);
        vocab_free(v);
        best = t < best ? t : best;
    }
    return best;
}

/* The floor for a binary load: read() of the file into fresh memory. */
static double time_read(const char *path)
{
    uint64_t n = file_size(path);
    double best = 1e30;
    for (int r = 0; r < RUNS; r++) {
        struct matrix m; /* same allocator the loader uses, so page faults count alike */
        if (matrix_init(&m, (int64_t)(n / 64 + 1), 16) != CORE_OK)
            exit(1);
        int fd = open(path, O_RDONLY);
        double t0 = now();
        int64_t got = loader_pread(fd, m.data, n, 0);
        double t = now() - t0;
        close(fd);
        matrix_deinit(&m);
        if (got != (int64_t)n)
            exit(1);
        best = t < best ? t : best;
    }
    return best;
}

/* The floor for a text load without the fast path: strtof over every value
 * of the file already in memory (no tokens, no rows). */
static double time_strtof(const char *path, int64_t *count)
{
    FILE *f = fopen(path, "rb");
    uint64_t n = file_size(path);
    char *buf = malloc(n + 1);
    if (f == NULL || buf == NULL || fread(buf, 1, n, f) != n)
        exit(1);
    fclose(f);
    buf[n] = '\0';
    double t0 = now();
    volatile float sink = 0;
    *count = 0;
    char *p = strchr(buf, '\n') + 1;
    while (*p != '\0') {
        p = strchr(p, ' '); /* skip the token */
        while (*p == ' ') {
            char *end;
            sink += strtof(p + 1, &end);
            (*count)++;
            p = end;
        }
        p++; /* '\n' */
    }
    double t = now() - t0;
    (void)sink;
    free(buf);
    return t;
}

int main(int argc, char **argv)
{
    int64_t rows = argc > 1 ? atoll(argv[1]) : 1000000, dim = argc > 2 ? atoll(argv[2]) : 128;
    int64_t words = argc > 3 ? atoll(argv[3]) : 100000, tdim = argc > 4 ? atoll(argv[4]) : 300;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char npy[512], txt[512];
    snprintf(npy, sizeof(npy), "%s/bench-load-%d.npy", tmp, (int)getpid());
    snprintf(txt, sizeof(txt), "%s/bench-load-%d.txt", tmp, (int)getpid());

    printf("generating %lld x %lld float32 .npy and %lld x %lld word2vec text in %s ...\n",
           (long long)rows, (long long)dim, (long long)words, (long long)tdim, tmp);
    if (make_npy(npy, rows, dim) != 0 || make_text(txt, words, tdim) != 0) {
        fprintf(stderr, "cannot write the bench files\n");
        return 1;
    }
    double mb_npy = (double)file_size(npy) / 1e6, mb_txt = (double)file_size(txt) / 1e6;

    double t_npy = time_load(npy, LOADER_AUTO);
    double t_read = time_read(npy);
    printf("npy   %lld x %lld (%.0f MB): load %.3f s, %.0f MB/s; read() floor %.3f s, "
           "%.0f MB/s; load/read %.2fx\n",
           (long long)rows, (long long)dim, mb_npy, t_npy, mb_npy / t_npy, t_read,
           mb_npy / t_read, t_npy / t_read);

    double t_txt = time_load(txt, LOADER_AUTO);
    int64_t nvals = 0;
    double t_strtof = time_strtof(txt, &nvals);
    printf("text  %lld x %lld (%.0f MB, %lld values): load %.3f s, %.0f MB/s, %.1f ns/value; "
           "strtof alone %.3f s, %.1f ns/value; strtof/load %.2fx\n",
           (long long)words, (long long)tdim, mb_txt, (long long)nvals, t_txt, mb_txt / t_txt,
           t_txt * 1e9 / (double)nvals, t_strtof, t_strtof * 1e9 / (double)nvals,
           t_strtof / t_txt);
    printf("(best of %d runs, files in the page cache)\n", RUNS);
    unlink(npy);
    unlink(txt);
    return 0;
}
