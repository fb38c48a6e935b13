/* metrics.c - see metrics.h. */
#include "metrics.h"

#include "cluster.h"

#include <stddef.h>
#include <stdio.h>

#define PREFIX "embedding_server_"

static const unsigned statuses[] = {
#define STATUS_VALUE(code) code,
    METRICS_STATUS_MAP(STATUS_VALUE)
#undef STATUS_VALUE
};
#define OTHER_STATUS (METRICS_NSTATUS - 1)

/* Upper bounds in nanoseconds, and the same as Prometheus "le" labels. */
static const uint64_t bucket_ns[METRICS_NBUCKETS] = {
    100000,    250000,    500000,    1000000,    2500000,    5000000,    10000000,  25000000,
    50000000,  100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000,
};
static const char *const bucket_le[METRICS_NBUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",
};

void metrics_init(struct metrics *m)
{
    *m = (struct metrics){0};
}

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i < OTHER_STATUS; i++)
        if (statuses[i] == status)
            return i;
    return OTHER_STATUS;
}

static void add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void metrics_observe(struct metrics *m, enum route_id route, unsigned status,
                     uint64_t duration_ns)
{
    add(&m->requests[route][status_index(status)], 1);
    for (size_t i = 0; i < METRICS_NBUCKETS; i++) {
        if (duration_ns <= bucket_ns[i]) {
            add(&m->buckets[route][i], 1);
            break;
        }
    }
    add(&m->duration_ns[route], duration_ns);
    add(&m->count[route], 1);
}

static void render_requests(struct metrics *m, struct buf *b)
{
    buf_puts(b, "# HELP " PREFIX "requests_total Requests answered, by route and status.\n"
                "# TYPE " PREFIX "requests_total counter\n");
    for (int r = 0; r < ROUTE_COUNT; r++) {
        for (size_t s = 0; s < METRICS_NSTATUS; s++) {
            uint64_t n = get(&m->requests[r][s]);
            if (n == 0)
                continue;
            char status[8] = "other";
            if (s != OTHER_STATUS)
                snprintf(status, sizeof status, "%u", statuses[s]);
            buf_printf(b, PREFIX "requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                       route_label((enum route_id)r), status, (unsigned long long)n);
        }
    }
}

static void render_latency(struct metrics *m, struct buf *b)
{
    buf_puts(b, "# HELP " PREFIX "request_duration_seconds Time from the request's "
                "headers to its answer being queued, by route.\n"
                "# TYPE " PREFIX "request_duration_seconds histogram\n");
    for (int r = 0; r < ROUTE_COUNT; r++) {
        uint64_t count = get(&m->count[r]);
        if (count == 0)
            continue;
        const char *label = route_label((enum route_id)r);
        uint64_t cumulative = 0;
        for (size_t i = 0; i < METRICS_NBUCKETS; i++) {
            cumulative += get(&m->buckets[r][i]);
            buf_printf(b, PREFIX "request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %llu\n",
                       label, bucket_le[i], (unsigned long long)cumulative);
        }
        /* +Inf equals _count by definition; read once so they agree */
        buf_printf(b, PREFIX "request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                   label, (unsigned long long)(count > cumulative ? count : cumulative));
        buf_printf(b, PREFIX "request_duration_seconds_sum{route=\"%s\"} %.9f\n", label,
                   (double)get(&m->duration_ns[r]) * 1e-9);
        buf_printf(b, PREFIX "request_duration_seconds_count{route=\"%s\"} %llu\n", label,
                   (unsigned long long)(count > cumulative ? count : cumulative));
    }
}

/* One metric family with a value per loaded table. */
static void render_table_family(struct registry *r, struct buf *b, const char *name,
                                const char *type, const char *help,
                                uint64_t (*value)(struct registry_entry *e))
{
    buf_printf(b, "# HELP " PREFIX "%s %s\n# TYPE " PREFIX "%s %s\n", name, help, name, type);
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        if (registry_table(e) == NULL)
            continue;
        buf_printf(b, PREFIX "%s{table=\"%s\"} %llu\n", name, e->cfg->name,
                   (unsigned long long)value(e));
    }
}

static uint64_t rows_served(struct registry_entry *e) { return get(&e->rows_served); }
static uint64_t updates(struct registry_entry *e) { return get(&e->updates); }
static uint64_t rows_updated(struct registry_entry *e) { return get(&e->rows_updated); }
static uint64_t version(struct registry_entry *e) { return table_version(e->table); }
static uint64_t num_rows(struct registry_entry *e)
{
    return (uint64_t)table_num_embeddings(e->table);
}
static uint64_t dim(struct registry_entry *e) { return (uint64_t)table_dim(e->table); }
static uint64_t seq(struct registry_entry *e) { return table_log_seq(e->table); }

static struct journal_stats stats_of(struct registry_entry *e)
{
    struct journal_stats st = {0};
    if (e->journal != NULL)
        journal_get_stats(e->journal, &st);
    return st;
}
static uint64_t log_records(struct registry_entry *e) { return stats_of(e).records; }
static uint64_t log_syncs(struct registry_entry *e) { return stats_of(e).syncs; }
static uint64_t log_synced_writes(struct registry_entry *e) { return stats_of(e).synced_writes; }
static uint64_t log_bytes(struct registry_entry *e)
{
    return e->journal != NULL ? journal_appended_bytes(e->journal) : 0;
}
static uint64_t log_broken(struct registry_entry *e)
{
    return e->journal != NULL && journal_broken(e->journal);
}

/* Seconds spent in the log's fdatasyncs, per table. */
static void render_sync_seconds(struct registry *r, struct buf *b)
{
    buf_puts(b, "# HELP " PREFIX "log_sync_seconds_total Time spent making log records "
                "durable (fdatasync).\n# TYPE " PREFIX "log_sync_seconds_total counter\n");
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        if (registry_table(e) != NULL)
            buf_printf(b, PREFIX "log_sync_seconds_total{table=\"%s\"} %.9f\n", e->cfg->name,
                       (double)stats_of(e).sync_ns * 1e-9);
    }
}

void metrics_render(struct metrics *m, struct registry *r, struct buf *b)
{
    render_requests(m, b);
    render_latency(m, b);
    buf_printf(b, "# HELP " PREFIX "requests_in_flight Requests being handled.\n"
                  "# TYPE " PREFIX "requests_in_flight gauge\n" PREFIX "requests_in_flight %lld\n",
               (long long)atomic_load(&m->in_flight));
    buf_printf(b, "# HELP " PREFIX "ready 1 once every table is loaded.\n"
                  "# TYPE " PREFIX "ready gauge\n" PREFIX "ready %d\n",
               registry_ready(r) ? 1 : 0);
    render_table_family(r, b, "rows_served_total", "counter",
                        "Rows returned by lookups and bags.", rows_served);
    render_table_family(r, b, "updates_applied_total", "counter",
                        "Write requests applied (gradient steps and row assignments).",
                        updates);
    render_table_family(r, b, "rows_updated_total", "counter",
                        "Rows changed by applied write requests.", rows_updated);
    render_table_family(r, b, "table_version", "gauge",
                        "Update batches applied to the table so far.", version);
    render_table_family(r, b, "table_rows", "gauge", "num_embeddings of the table.", num_rows);
    render_table_family(r, b, "table_dim", "gauge", "embedding_dim of the table.", dim);
    render_table_family(r, b, "table_seq", "gauge",
                        "Position in the table's log of the last record applied.", seq);
    render_table_family(r, b, "log_records_total", "counter",
                        "Records appended to the table's log (writes and renormalizations).",
                        log_records);
    render_table_family(r, b, "log_bytes_total", "counter",
                        "Bytes appended to the table's log since start.", log_bytes);
    render_table_family(r, b, "log_syncs_total", "counter",
                        "fdatasyncs of the log that made writes durable.", log_syncs);
    render_table_family(r, b, "log_synced_writes_total", "counter",
                        "Writes made durable by those syncs (over log_syncs_total: the "
                        "group commit's batch size).", log_synced_writes);
    render_sync_seconds(r, b);
    render_table_family(r, b, "log_broken", "gauge",
                        "1 after a log append could not be undone or a sync failed: writes "
                        "answer 503 until a restart.", log_broken);
    cluster_render_metrics(r->cluster, r, b);
}
