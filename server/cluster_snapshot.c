/* cluster_snapshot.c - snapshots published for the cluster, and the purge
 * they allow; see cluster.h.
 *
 * A published snapshot is the files of one snapshot directory, in chunks
 * of at most CHUNK_MAX bytes on the subject essnap.<table>.0.chunk (headers
 * Es-Snap: the publication's id, Es-File: the file name), then one commit
 * message on essnap.<table>.0.commit:
 *   {"format": 1, "seq": S, "time_ms", "id": "...", "files": [{"name", "bytes",
 *    "crc32c", "first", "chunks"}, ...]}
 * where first is the stream sequence of the file's first chunk. The commit
 * is published with the last commit's sequence as the expected one, so of
 * two servers publishing at once one wins and the other stops there. After
 * a commit the snapshot stream is purged below this snapshot's chunks (one
 * snapshot is kept) and the table's record stream below
 * min(S, the oldest position of any live consumer) + 1: a starting server
 * that needs an older record finds this snapshot instead, and a running
 * replica that lags is not cut off. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cluster_internal.h"
#include "clock.h"
#include "error.h"
#include "log.h"
#include "snapshot.h"
#include "wal.h"

#define CHUNK_MAX ((size_t)1 << 20)
#define MAX_FILES 16
#define COMMIT_FORMAT 1
/* Replicas reach log_max_bytes at about the same time: one publication per
 * table in this window is enough (the others would upload the same table
 * again for a few more records). */
#define REPUBLISH_MS 30000

struct snap_file {
    char name[64];
    uint64_t bytes;
    uint32_t crc;
    uint64_t first;  /* stream seq of its first chunk */
    uint64_t chunks;
};

struct commit {
    uint64_t seq;      /* the table's log seq the snapshot holds */
    uint64_t time_ms;  /* wall clock at publication */
    char id[64];
    size_t nfiles;
    struct snap_file files[MAX_FILES];
    uint64_t msg_seq;  /* the commit message's own stream seq */
};

static int nats_fail(char *err, size_t errlen, const char *what, const char *name, natsStatus s,
                     jsErrCode jerr)
{
    return core_fail(err, errlen, CORE_EIO, "%s %s: %s (JetStream error %d)", what, name,
                     natsStatus_GetText(s), (int)jerr);
}

/* ---- the commit message --------------------------------------------------- */

static int parse_commit(const char *text, size_t len, struct commit *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(root, "seq");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    bool ok = cJSON_IsNumber(seq) && seq->valuedouble >= 1 && cJSON_IsString(id) &&
              strlen(id->valuestring) < sizeof c->id && cJSON_IsArray(files) &&
              cJSON_GetArraySize(files) <= MAX_FILES;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "time_ms");
    if (ok) {
        c->seq = (uint64_t)seq->valuedouble;
        c->time_ms = cJSON_IsNumber(t) ? (uint64_t)t->valuedouble : 0;
        snprintf(c->id, sizeof c->id, "%s", id->valuestring);
        for (const cJSON *f = files->child; f && ok; f = f->next) {
            struct snap_file *sf = &c->files[c->nfiles++];
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
            const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(f, "bytes");
            const cJSON *crc = cJSON_GetObjectItemCaseSensitive(f, "crc32c");
            const cJSON *first = cJSON_GetObjectItemCaseSensitive(f, "first");
            const cJSON *chunks = cJSON_GetObjectItemCaseSensitive(f, "chunks");
            ok = cJSON_IsString(name) && strlen(name->valuestring) < sizeof sf->name &&
                 strchr(name->valuestring, '/') == NULL && name->valuestring[0] != '.' &&
                 cJSON_IsNumber(bytes) && cJSON_IsNumber(crc) && cJSON_IsNumber(first) &&
                 cJSON_IsNumber(chunks);
            if (ok) {
                snprintf(sf->name, sizeof sf->name, "%s", name->valuestring);
                sf->bytes = (uint64_t)bytes->valuedouble;
                sf->crc = (uint32_t)crc->valuedouble;
                sf->first = (uint64_t)first->valuedouble;
                sf->chunks = (uint64_t)chunks->valuedouble;
            }
        }
    }
    cJSON_Delete(root);
    if (!ok)
        return core_fail(err, errlen, CORE_EFORMAT, "%s", "the cluster's snapshot commit does "
                         "not decode");
    return CORE_OK;
}

/* The newest commit, *found false when the cluster holds none. */
static int last_commit(struct cluster_table *ct, struct commit *c, bool *found, char *err,
                       size_t errlen)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    *found = false;
    natsStatus s = js_GetLastMsg(&m, ct->cl->js, ct->snap_stream, ct->snap_commit, NULL, &jerr);
    if (s != NATS_OK)
        return jerr == JSNoMessageFoundErr
                   ? CORE_OK
                   : nats_fail(err, errlen, "reading the last commit of", ct->snap_stream, s,
                               jerr);
    int rc = parse_commit(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), c, err, errlen);
    c->msg_seq = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    *found = rc == CORE_OK;
    return rc;
}

static void write_commit(const struct commit *c, struct buf *b)
{
    buf_printf(b, "{\"format\":%d,\"seq\":%" PRIu64 ",\"time_ms\":%" PRIu64 ",\"id\":\"%s\","
                  "\"files\":[", COMMIT_FORMAT, c->seq, c->time_ms, c->id);
    for (size_t i = 0; i < c->nfiles; i++) {
        const struct snap_file *f = &c->files[i];
        buf_printf(b, "%s{\"name\":\"%s\",\"bytes\":%" PRIu64 ",\"crc32c\":%u,\"first\":%" PRIu64
                      ",\"chunks\":%" PRIu64 "}",
                   i ? "," : "", f->name, f->bytes, f->crc, f->first, f->chunks);
    }
    buf_puts(b, "]}");
}

/* ---- publishing ------------------------------------------------------------ */

static int compare_names(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* The regular files of dir, by name. */
static int list_files(const char *dir, struct commit *c, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return core_fail(err, errlen, CORE_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *de;
    int rc = CORE_OK;
    while ((de = readdir(d)) != NULL && rc == CORE_OK) {
        if (de->d_name[0] == '.')
            continue;
        if (c->nfiles == MAX_FILES || strlen(de->d_name) >= sizeof c->files[0].name)
            rc = core_fail(err, errlen, CORE_EINVAL, "%s: unexpected file %s", dir, de->d_name);
        else
            memcpy(c->files[c->nfiles++].name, de->d_name, strlen(de->d_name) + 1);
    }
    closedir(d);
    qsort(c->files, c->nfiles, sizeof c->files[0], compare_names);
    return rc;
}

static natsStatus publish_chunk(struct cluster_table *ct, const char *id, const char *file,
                                const char *data, size_t n, uint64_t *seq, jsErrCode *jerr)
{
    natsMsg *m = NULL;
    jsPubAck *pa = NULL;
    natsStatus s = natsMsg_Create(&m, ct->snap_chunk, NULL, data, (int)n);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Es-Snap", id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Es-File", file);
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, ct->cl->js, m, NULL, jerr);
    if (s == NATS_OK)
        *seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    return s;
}

/* Publishes one file of the snapshot directory in chunks. */
static int publish_file(struct cluster_table *ct, const char *dir, const char *id,
                        struct snap_file *f, char *buf, size_t chunk, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, f->name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: %s", path, strerror(errno));
    int rc = CORE_OK;
    for (;;) {
        ssize_t n = read(fd, buf, chunk);
        if (n < 0) {
            rc = core_fail(err, errlen, CORE_EIO, "%s: %s", path, strerror(errno));
            break;
        }
        if (n == 0 && f->chunks > 0)
            break;
        uint64_t seq = 0;
        jsErrCode jerr = 0;
        natsStatus s = publish_chunk(ct, id, f->name, buf, (size_t)n, &seq, &jerr);
        if (s != NATS_OK) {
            rc = nats_fail(err, errlen, "publishing a snapshot chunk to", ct->snap_stream, s, jerr);
            break;
        }
        if (f->chunks++ == 0)
            f->first = seq;
        f->bytes += (uint64_t)n;
        f->crc = wal_crc32c(f->crc, buf, (size_t)n);
        if (n == 0)
            break; /* an empty file: one empty chunk */
    }
    close(fd);
    return rc;
}

/* The oldest record any live consumer of the stream (a running replica)
 * may still need, minus one: UINT64_MAX when there is none. */
static int slowest_consumer(struct cluster_table *ct, uint64_t *pos, char *err, size_t errlen)
{
    jsConsumerInfoList *list = NULL;
    jsErrCode jerr = 0;
    *pos = UINT64_MAX;
    natsStatus s = js_Consumers(&list, ct->cl->js, ct->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND)
        return CORE_OK;
    if (s != NATS_OK)
        return nats_fail(err, errlen, "listing the consumers of", ct->stream, s, jerr);
    for (int i = 0; i < list->Count; i++)
        if (list->List[i]->Delivered.Stream < *pos)
            *pos = list->List[i]->Delivered.Stream;
    jsConsumerInfoList_Destroy(list);
    return CORE_OK;
}

/* Removes the messages of stream before keep_from. Only when that removes
 * something: nats-server 2.9 takes a purge up to seq 1 for a purge of
 * everything. */
static natsStatus purge_below(struct cluster_table *ct, const char *stream, uint64_t keep_from,
                              jsErrCode *jerr)
{
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, ct->cl->js, stream, NULL, jerr);
    if (s != NATS_OK)
        return s;
    bool nothing = keep_from <= si->State.FirstSeq || keep_from <= 1;
    jsStreamInfo_Destroy(si);
    if (nothing)
        return NATS_OK;
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Sequence = keep_from; /* up to, not including */
    return js_PurgeStream(ct->cl->js, stream, &o, jerr);
}

/* After a commit: one snapshot kept, records below it go. */
static int purge(struct cluster_table *ct, const struct commit *c, char *err, size_t errlen)
{
    uint64_t first = c->msg_seq;
    for (size_t i = 0; i < c->nfiles; i++)
        if (c->files[i].first < first)
            first = c->files[i].first;
    jsErrCode jerr = 0;
    natsStatus s = purge_below(ct, ct->snap_stream, first, &jerr);
    if (s != NATS_OK)
        return nats_fail(err, errlen, "purging", ct->snap_stream, s, jerr);
    uint64_t slowest = 0;
    int rc = slowest_consumer(ct, &slowest, err, errlen);
    if (rc != CORE_OK)
        return rc;
    uint64_t upto = c->seq < slowest ? c->seq : slowest;
    if (upto <= 1)
        return CORE_OK;
    if ((s = purge_below(ct, ct->stream, upto + 1, &jerr)) != NATS_OK)
        return nats_fail(err, errlen, "purging", ct->stream, s, jerr);
    log_info("table %s: purged stream %s up to seq %llu (the cluster's snapshot holds seq "
             "%llu)", ct->name, ct->stream, (unsigned long long)upto,
             (unsigned long long)c->seq);
    return CORE_OK;
}

/* Publishes the commit, expecting prev (or none) to be the last one. */
static int publish_commit(struct cluster_table *ct, struct commit *c, const struct commit *prev,
                          bool have_prev, bool *lost, char *err, size_t errlen)
{
    struct buf b;
    buf_init(&b, 0);
    write_commit(c, &b);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    if (have_prev)
        po.ExpectLastSubjectSeq = prev->msg_seq;
    else
        po.ExpectNoMessage = true;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = b.failed ? NATS_NO_MEMORY
                            : js_Publish(&pa, ct->cl->js, ct->snap_commit, b.data, (int)b.len,
                                         &po, &jerr);
    buf_deinit(&b);
    *lost = s != NATS_OK && jerr == JSStreamWrongLastSequenceErr;
    if (s == NATS_OK)
        c->msg_seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    if (s != NATS_OK && !*lost)
        return nats_fail(err, errlen, "publishing the snapshot commit to", ct->snap_stream, s,
                         jerr);
    return CORE_OK;
}

int cluster_table_publish_snapshot(struct cluster_table *ct, const char *dir, uint64_t seq,
                                   char *err, size_t errlen)
{
    struct commit prev, c;
    bool have_prev = false;
    int rc = last_commit(ct, &prev, &have_prev, err, errlen);
    if (rc != CORE_OK)
        return rc;
    uint64_t now = clock_wall_ms();
    bool recent = have_prev && now >= prev.time_ms && now - prev.time_ms < REPUBLISH_MS;
    if (seq == 0 || (have_prev && (prev.seq >= seq || recent))) {
        if (have_prev)
            atomic_store(&ct->snapshot_seq, prev.seq);
        return CORE_OK; /* the cluster has one as new, or one just published */
    }
    memset(&c, 0, sizeof c);
    c.seq = seq;
    c.time_ms = now;
    snprintf(c.id, sizeof c.id, "%s-%" PRIu64, ct->cl->nonce_hex,
             atomic_fetch_add(&ct->cl->next_id, 1));
    if ((rc = list_files(dir, &c, err, errlen)) != CORE_OK)
        return rc;
    int64_t max_payload = natsConnection_GetMaxPayload(ct->cl->nc);
    size_t chunk = CHUNK_MAX;
    if (max_payload > 0 && (size_t)max_payload < chunk + 4096)
        chunk = (size_t)max_payload - 4096;
    char *buf = malloc(chunk);
    if (buf == NULL)
        return CORE_ENOMEM;
    double t0 = clock_mono_s();
    uint64_t bytes = 0;
    for (size_t i = 0; i < c.nfiles && rc == CORE_OK; i++) {
        rc = publish_file(ct, dir, c.id, &c.files[i], buf, chunk, err, errlen);
        bytes += c.files[i].bytes;
    }
    free(buf);
    bool lost = false;
    if (rc == CORE_OK)
        rc = publish_commit(ct, &c, &prev, have_prev, &lost, err, errlen);
    if (rc != CORE_OK || lost) {
        if (lost)
            log_info("table %s: another server published a snapshot for the cluster first",
                     ct->name);
        return rc;
    }
    atomic_store(&ct->snapshot_seq, seq);
    log_info("table %s: published the snapshot at seq %llu for the cluster (%.1f MB in %.2f s)",
             ct->name, (unsigned long long)seq, (double)bytes / 1e6, clock_mono_s() - t0);
    return purge(ct, &c, err, errlen);
}

/* ---- fetching -------------------------------------------------------------- */

/* Writes the chunks of f (found from f->first on, skipping other
 * publications' chunks) into fd, checking length and CRC. */
static int fetch_file(struct cluster_table *ct, const struct commit *c, const struct snap_file *f,
                      int fd, char *err, size_t errlen)
{
    uint64_t got = 0, bytes = 0, seq = f->first;
    uint32_t crc = 0;
    while (got < f->chunks) {
        if (seq >= c->msg_seq)
            return core_fail(err, errlen, CORE_EFORMAT, "the cluster's snapshot at seq %llu "
                             "lacks chunks of %s (purged meanwhile?)",
                             (unsigned long long)c->seq, f->name);
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetMsg(&m, ct->cl->js, ct->snap_stream, seq++, NULL, &jerr);
        if (s != NATS_OK && jerr == JSNoMessageFoundErr)
            continue;
        if (s != NATS_OK)
            return nats_fail(err, errlen, "reading a snapshot chunk of", ct->snap_stream, s,
                             jerr);
        const char *id = NULL, *file = NULL;
        bool mine = natsMsgHeader_Get(m, "Es-Snap", &id) == NATS_OK &&
                    natsMsgHeader_Get(m, "Es-File", &file) == NATS_OK && id && file &&
                    strcmp(id, c->id) == 0 && strcmp(file, f->name) == 0;
        const char *data = natsMsg_GetData(m);
        size_t n = (size_t)natsMsg_GetDataLength(m);
        int rc = CORE_OK;
        if (mine) {
            got++;
            bytes += n;
            crc = wal_crc32c(crc, data, n);
            if (n > 0 && write(fd, data, n) != (ssize_t)n)
                rc = core_fail(err, errlen, CORE_EIO, "writing %s: %s", f->name, strerror(errno));
        }
        natsMsg_Destroy(m);
        if (rc != CORE_OK)
            return rc;
    }
    if (bytes != f->bytes || crc != f->crc)
        return core_fail(err, errlen, CORE_EFORMAT, "the cluster's snapshot at seq %llu: %s "
                         "does not match its commit (%llu bytes, CRC %08x; expected %llu, %08x)",
                         (unsigned long long)c->seq, f->name, (unsigned long long)bytes, crc,
                         (unsigned long long)f->bytes, f->crc);
    if (fsync(fd) != 0)
        return core_fail(err, errlen, CORE_EIO, "fsync %s: %s", f->name, strerror(errno));
    return CORE_OK;
}

static int fsync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? CORE_OK
                                        : core_fail(err, errlen, CORE_EIO, "fsync %s: %s", dir,
                                                    strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Fetches c into a hidden temporary directory (removed at start by
 * snapshot_clean_tmp if a crash leaves it), then renames it into place. */
static int fetch(struct cluster_table *ct, const char *data_dir, const struct commit *c,
                 char *err, size_t errlen)
{
    char table_dir[4096], tmp[4200], final[4200];
    snprintf(table_dir, sizeof table_dir, "%s/%s", data_dir, ct->name);
    if ((mkdir(data_dir, 0755) != 0 && errno != EEXIST) ||
        (mkdir(table_dir, 0755) != 0 && errno != EEXIST))
        return core_fail(err, errlen, CORE_EIO, "%s: %s", table_dir, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s/.tmp-snapshot-fetch-%ld", table_dir, (long)getpid());
    remove_dir(tmp);
    if (mkdir(tmp, 0755) != 0)
        return core_fail(err, errlen, CORE_EIO, "%s: %s", tmp, strerror(errno));
    int rc = snapshot_path(data_dir, ct->name, c->seq, final, sizeof final);
    for (size_t i = 0; i < c->nfiles && rc == CORE_OK; i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", tmp, c->files[i].name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            rc = core_fail(err, errlen, CORE_EIO, "%s: %s", path, strerror(errno));
            break;
        }
        rc = fetch_file(ct, c, &c->files[i], fd, err, errlen);
        close(fd);
    }
    if (rc == CORE_OK)
        rc = fsync_dir(tmp, err, errlen);
    if (rc == CORE_OK && rename(tmp, final) != 0)
        rc = core_fail(err, errlen, CORE_EIO, "rename %s -> %s: %s", tmp, final, strerror(errno));
    if (rc != CORE_OK) {
        remove_dir(tmp);
        return rc;
    }
    return fsync_dir(table_dir, err, errlen);
}

int cluster_table_fetch_snapshot(struct cluster_table *ct, const char *data_dir,
                                 uint64_t after_seq, bool *fetched, char *err, size_t errlen)
{
    *fetched = false;
    struct commit c;
    double t0 = clock_mono_s();
    uint64_t tried = 0;
    for (int attempt = 0;; attempt++) {
        bool found = false;
        /* JetStream may answer the stream's creation and still be electing
         * the snapshot stream's leader (error 10008) for a few seconds */
        int rc = CORE_EIO;
        for (int i = 0; i < 20 && rc == CORE_EIO; i++) {
            if (i > 0)
                nanosleep(&(struct timespec){0, 500000000L}, NULL);
            rc = last_commit(ct, &c, &found, err, errlen);
        }
        if (rc != CORE_OK || !found)
            return rc;
        atomic_store(&ct->snapshot_seq, c.seq);
        if (c.seq <= after_seq)
            return CORE_OK; /* the local one is as new */
        if (c.seq == tried)
            return CORE_EFORMAT; /* the same snapshot failed again: err from that try */
        tried = c.seq;
        rc = fetch(ct, data_dir, &c, err, errlen);
        /* a newer snapshot published meanwhile may have purged this one's
         * chunks: look for it (a few times) rather than fail the start */
        if (rc == CORE_OK)
            break;
        if (rc != CORE_EFORMAT || attempt == 3)
            return rc;
        log_warn("table %s: %s; looking for a newer snapshot", ct->name, err);
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < c.nfiles; i++)
        bytes += c.files[i].bytes;
    log_info("table %s: fetched the cluster's snapshot at seq %llu (newest here: %llu; %.1f MB "
             "in %.2f s)", ct->name, (unsigned long long)c.seq, (unsigned long long)after_seq,
             (double)bytes / 1e6, clock_mono_s() - t0);
    *fetched = true;
    return CORE_OK;
}
