/* pairload: the benchmark's load client for paired runs, over HTTP/1.1 or HTTP/2 (h2c).
 *
 *   pairload [-2] -c CONNECTIONS [-m STREAMS] -d SECONDS [-s SLICE_MS -g GUARD_MS]
 *            HOST PORT FILE_A [FILE_B]
 *
 * FILE_A, FILE_B: request files as bench/rotate.lua reads them: complete HTTP/1.1 requests
 * (request line, headers, blank line, then a body of Content-Length bytes if any), each
 * followed by one NUL byte. Each case sends its requests in turn, every connection starting at
 * another place, so that every request of a case can carry another credential.
 *
 * HTTP/1.1 (default): CONNECTIONS keep-alive connections, one request in flight on each (no
 * pipelining); the raw bytes are sent as they are. A response must give its length with
 * Content-Length, or have no body (a HEAD request, 204, 304); anything else (chunked, a body
 * delimited by the close) is a protocol error. After a response with Connection: close, the
 * connection is made again ("reconnects").
 *
 * HTTP/2 (-2): h2c with prior knowledge (the connection preface at once, as h2load with an
 * http:// URL), with libnghttp2; STREAMS (-m, default 1) streams in flight on each connection.
 * Each request is converted: the request line gives :method and :path, :scheme is http, Host
 * gives :authority, the other header names are lowercased, and the connection-specific ones
 * (Connection, Keep-Alive, Proxy-Connection, Upgrade, TE but "TE: trailers") are left out; a
 * body goes in DATA frames.
 *
 * Paired mode (two files) is rotate.lua's method. Time is cut into slices of SLICE_MS (default
 * 50) of CLOCK_MONOTONIC, numbered floor(t / SLICE_MS): a request sent in an even slice is case
 * A's, in an odd one case B's. It is counted in its slice when it is sent GUARD_MS (default 5)
 * or more into it: before that, the responses that trigger the sends may still be the other
 * case's. The first and last slices of the run (partial) are not counted. A case's req/s is its
 * counted requests over its whole slices times SLICE_MS - GUARD_MS. Besides, the latency of
 * each counted request (from its send to the end of its response) goes to its case's histogram
 * (log-linear, 128 buckets per power of two: under 0.4 % error), which gives p50, p90 and p99.
 * Single mode (one file): one case, counted from 100 ms into the run to its end.
 *
 * A request is counted when its response has come (a closed loop: every send follows a
 * response, so the counts are throughputs). At the end sending stops, and the requests in
 * flight are waited for, 2 s at most (the rest are timeouts). A connection lost to an error
 * (connect, read, write, reset, protocol) is counted and made again 10 ms later.
 *
 * Output: one line on stdout, "BENCH " and a JSON object:
 *   {"mode":"h1"|"h2","connections":C,"streams":M,"seconds":S,["slice_ms":50,"guard_ms":5,]
 *    "requests":N,"reconnects":N,"errors":{"connect":N,"read":N,"write":N,"reset":N,
 *    "protocol":N,"timeout":N},"a":CASE[,"b":CASE]}
 *   CASE = {"requests":N,"counted":N,"ms":N,"req_per_s":X,"mean_us":X,"p50_us":X,"p90_us":X,
 *           "p99_us":X,"status":{"2xx":N,"3xx":N,"4xx":N,"5xx":N,"other":N}}
 * where "requests" are the responses received (a case's: to requests sent in its slices,
 * counted or not), "status" counts them by class, and the mean and percentiles are the counted
 * ones' latencies.
 * Exits 2 on a bad argument or request file, 1 when no connection could be made at the start
 * (one line on stderr), 0 otherwise: errors during the run are in the line. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, getopt */
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define NS_PER_MS ((uint64_t)1000000)
#define RBUF_SIZE 65536 /* one read; also the largest response head */
#define OUT_BATCH 32768 /* HTTP/2 frames gathered into one write */
#define WARMUP_MS 100   /* single mode: not counted */
#define DRAIN_MS 2000   /* longest wait for the requests in flight at the end */
#define RETRY_MS 10     /* a lost connection is made again after this (a server down) */
#define CONNECT_MS 2000 /* longest wait for the first connections */
#define MAX_EVENTS 256
/* HTTP/2 windows as h2load's defaults (-w 30 -W 30): flow control never waits. */
#define H2_WINDOW ((1 << 30) - 1)
/* The histogram: values below 2^(SUB_BITS+1) ns exact, then 2^SUB_BITS buckets per power of 2. */
#define SUB_BITS 7
#define HIST_N ((64 - SUB_BITS + 1) << SUB_BITS)

enum { E_CONNECT, E_READ, E_WRITE, E_RESET, E_PROTOCOL, E_TIMEOUT, E_N };
static const char *const ERR_NAMES[E_N] = {"connect", "read",     "write",
                                           "reset",   "protocol", "timeout"};

enum { P_CONNECT, P_LOAD, P_DRAIN };             /* the run's phases */
enum { C_CLOSED, C_CONNECTING, C_OPEN, C_WAIT }; /* a connection's states */

typedef struct {
    const char *raw; /* the HTTP/1.1 bytes, sent as they are */
    size_t len;
    const char *body; /* inside raw */
    size_t body_len;
    int head;      /* a HEAD request: its response has no body */
    size_t nv_off; /* its HTTP/2 header block: reqlist.nv[nv_off .. nv_off + nv_len) */
    size_t nv_len;
} request;

typedef struct {
    char *buf; /* the file; the requests and the HTTP/2 names and values point into it */
    request *v;
    size_t n;
    nghttp2_nv *nv;
    size_t nv_n, nv_cap;
} reqlist;

typedef struct {
    reqlist list;
    uint64_t done;      /* responses */
    uint64_t counted;   /* responses to counted requests */
    uint64_t status[6]; /* responses by class: [2] 2xx... [0] anything else */
    uint64_t sum_ns;    /* of the counted latencies: their mean */
    uint64_t hist[HIST_N];
} pcase;

typedef struct {
    int h2;
    int conns, streams;
    uint64_t duration_ns;
    uint64_t slice_ns, guard_ns;
    int paired;
    const char *host, *port;
    pcase cases[2];
    struct addrinfo *addr;
    nghttp2_session_callbacks *cb;
    int ep;
    int phase;
    uint64_t start, end, stopped, drain_end;
    uint64_t first_slice, last_slice; /* paired mode: partial, not counted */
    uint64_t inflight;                /* requests sent, not answered */
    int waiting;                      /* connections in C_WAIT */
    int connected;                    /* a connection was made */
    int connect_errno;
    uint64_t err[E_N];
    uint64_t reconnects;
} run;

typedef struct stream stream;
struct stream {
    const request *req;
    uint64_t sent; /* ns */
    int k;         /* its case */
    int counted;
    int status;
    size_t body_off; /* HTTP/2: body bytes given to nghttp2 */
    stream *next;    /* HTTP/2: the next free slot */
};

typedef struct {
    run *r;
    int fd;
    int state;
    unsigned gen; /* one more at each socket: tells a stale event apart */
    int want_out; /* EPOLLOUT is asked for */
    uint64_t retry_at;
    size_t pos[2]; /* each case's next request */
    /* HTTP/1.1 */
    stream one; /* the request in flight */
    int busy;
    size_t woff; /* its bytes written */
    int in_body;
    uint64_t body_left;
    int close_after; /* the response said Connection: close */
    size_t rlen, scanned;
    /* HTTP/2 */
    nghttp2_session *h2;
    stream *slots, *free;
    int active;
    int goaway;
    int dying; /* the session is being deleted: its callbacks count nothing */
    uint64_t now;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    char rbuf[RBUF_SIZE];
} conn;

static void die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("pairload: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL)
        die(1, "out of memory");
    return p;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- latency histogram ---- */

static size_t hist_index(uint64_t v)
{
    unsigned shift;

    if (v < (2u << SUB_BITS))
        return (size_t)v;
    shift = (unsigned)(63 - __builtin_clzll(v)) - SUB_BITS;
    return ((size_t)shift << SUB_BITS) + (size_t)(v >> shift);
}

/* The middle of bucket i, in ns. */
static double hist_value(size_t i)
{
    unsigned shift;
    uint64_t lo;

    if (i < (2u << SUB_BITS))
        return (double)i;
    shift = (unsigned)(i >> SUB_BITS) - 1;
    lo = (uint64_t)((i & ((1u << SUB_BITS) - 1)) | (1u << SUB_BITS)) << shift;
    return (double)lo + (double)((1ULL << shift) - 1) / 2;
}

/* The pct-th percentile (nearest rank) of n values, in microseconds. */
static double hist_pct(const uint64_t *h, uint64_t n, unsigned pct)
{
    uint64_t rank = (n * pct + 99) / 100, seen = 0;

    if (n == 0)
        return 0;
    for (size_t i = 0; i < HIST_N; i++) {
        seen += h[i];
        if (seen >= rank)
            return hist_value(i) / 1000;
    }
    return 0;
}

/* ---- request files ---- */

static char *slurp(const char *path, size_t *len)
{
    struct stat st;
    char *buf;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0)
        die(2, "%s: %s", path, strerror(errno));
    buf = xrealloc(NULL, (size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0)
            die(2, "%s: %s", path, n == 0 ? "shorter than its size" : strerror(errno));
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return buf;
}

static int name_is(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(p, lit, n) == 0;
}

/* Digits only, as both ends of a Content-Length must be: -1 otherwise. */
static int64_t parse_length(const char *p, size_t n)
{
    int64_t v = 0;

    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* Points *v at [b, e) without its leading and trailing spaces; gives its length. */
static size_t trim(const char *b, const char *e, const char **v)
{
    while (b < e && (*b == ' ' || *b == '\t'))
        b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *v = b;
    return (size_t)(e - b);
}

/* Headers that describe the HTTP/1.1 connection, which HTTP/2 forbids (RFC 9113 8.2.2). */
static int connection_specific(const char *name, size_t n, const char *v, size_t vn)
{
    if (name_is(name, n, "te"))
        return !name_is(v, vn, "trailers");
    return name_is(name, n, "connection") || name_is(name, n, "keep-alive") ||
           name_is(name, n, "proxy-connection") || name_is(name, n, "upgrade");
}

static size_t nv_push(reqlist *l, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (l->nv_n == l->nv_cap) {
        l->nv_cap = l->nv_cap ? 2 * l->nv_cap : 1024;
        l->nv = xrealloc(l->nv, l->nv_cap * sizeof(*l->nv));
    }
    /* The names and values live as long as the run: nghttp2 need not copy them. */
    l->nv[l->nv_n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, vlen,
                                  NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
    return l->nv_n++;
}

static void bad_request(const char *path, size_t i, const char *why)
{
    die(2, "%s: request %zu: %s", path, i + 1, why);
}

/* Checks the request [p, p + len) (i-th of path) and adds it to l, with its HTTP/2 header block
 * when h2 (the header names are then lowercased in place: the raw bytes are not sent). */
static void add_request(reqlist *l, const char *path, char *p, size_t len, int h2)
{
    request *q = &l->v[l->n];
    char *end = memmem(p, len, "\r\n\r\n", 4), *eol, *sp1, *sp2;
    int64_t clen = -1;
    size_t authority = 0;
    int have_host = 0;

    if (end == NULL)
        bad_request(path, l->n, "no blank line after the headers");
    eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
    sp1 = memchr(p, ' ', (size_t)(eol - p));
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp1 == p || sp2 == NULL || sp2 == sp1 + 1 || eol - sp2 != 9 ||
        memcmp(sp2 + 1, "HTTP/1.1", 8) != 0)
        bad_request(path, l->n, "the first line is not METHOD TARGET HTTP/1.1");
    q->raw = p;
    q->len = len;
    q->head = sp1 - p == 4 && memcmp(p, "HEAD", 4) == 0;
    q->body = end + 4;
    q->body_len = len - (size_t)(end + 4 - p);
    q->nv_off = l->nv_n;
    if (h2) {
        nv_push(l, ":method", 7, p, (size_t)(sp1 - p));
        nv_push(l, ":path", 5, sp1 + 1, (size_t)(sp2 - sp1 - 1));
        nv_push(l, ":scheme", 7, "http", 4);
        authority = nv_push(l, ":authority", 10, "", 0); /* Host may come last */
    }
    for (char *line = eol + 2; line < end + 2; line = eol + 2) {
        char *colon;
        const char *v;
        size_t nlen, vlen;

        eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line)
            bad_request(path, l->n, "a header line without a name");
        nlen = (size_t)(colon - line);
        vlen = trim(colon + 1, eol, &v);
        if (name_is(line, nlen, "transfer-encoding"))
            bad_request(path, l->n, "Transfer-Encoding (give the body a Content-Length)");
        if (name_is(line, nlen, "content-length") && (clen = parse_length(v, vlen)) < 0)
            bad_request(path, l->n, "a Content-Length that is not a number");
        if (!h2)
            continue;
        if (name_is(line, nlen, "host")) {
            l->nv[authority].value = (uint8_t *)v;
            l->nv[authority].valuelen = vlen;
            have_host = 1;
        } else if (!connection_specific(line, nlen, v, vlen)) {
            for (size_t i = 0; i < nlen; i++)
                line[i] = (char)((line[i] >= 'A' && line[i] <= 'Z') ? line[i] + 32 : line[i]);
            nv_push(l, line, nlen, v, vlen);
        }
    }
    if (q->body_len != (clen < 0 ? 0 : (size_t)clen))
        bad_request(path, l->n, "the body is not Content-Length bytes long");
    if (h2 && !have_host)
        bad_request(path, l->n, "no Host header (HTTP/2 needs it for :authority)");
    q->nv_len = l->nv_n - q->nv_off;
    l->n++;
}

static void load_requests(reqlist *l, const char *path, int h2)
{
    size_t len, cap = 0;
    char *buf = slurp(path, &len);

    l->buf = buf;
    for (size_t pos = 0; pos < len;) {
        char *z = memchr(buf + pos, '\0', len - pos);

        if (z == NULL)
            die(2, "%s: the last request is not followed by a NUL byte", path);
        if (l->n == cap) {
            cap = cap ? 2 * cap : 256;
            l->v = xrealloc(l->v, cap * sizeof(*l->v));
        }
        add_request(l, path, buf + pos, (size_t)(z - buf) - pos, h2);
        pos = (size_t)(z - buf) + 1;
    }
    if (l->n == 0)
        die(2, "%s: no requests", path);
}

/* ---- the load: requests, their cases, their counts ---- */

static int may_send(const run *r, uint64_t now)
{
    return r->phase == P_LOAD && now < r->end;
}

/* Gives s the next request of the case of the current slice, counted or not (rotate.lua). */
static void begin(conn *c, stream *s, uint64_t now)
{
    const run *r = c->r;
    const reqlist *l;
    int k = 0;

    if (r->paired) {
        uint64_t sl = now / r->slice_ns;

        k = (int)(sl & 1);
        s->counted =
            sl > r->first_slice && sl < r->last_slice && now - sl * r->slice_ns >= r->guard_ns;
    } else {
        s->counted = now >= r->start + WARMUP_MS * NS_PER_MS;
    }
    l = &r->cases[k].list;
    s->k = k;
    s->req = &l->v[c->pos[k]];
    c->pos[k] = c->pos[k] + 1 == l->n ? 0 : c->pos[k] + 1;
    s->sent = now;
    s->status = 0;
    s->body_off = 0;
}

static void complete(run *r, const stream *s, uint64_t now)
{
    pcase *pc = &r->cases[s->k];
    int cls = s->status / 100;

    pc->done++;
    pc->status[cls >= 1 && cls <= 5 ? cls : 0]++;
    if (s->counted) {
        pc->counted++;
        pc->sum_ns += now - s->sent;
        pc->hist[hist_index(now - s->sent)]++;
    }
    r->inflight--;
}

/* ---- connections ---- */

static void set_events(conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    if (epoll_ctl(c->r->ep, op, c->fd, &ev) != 0)
        die(1, "epoll_ctl: %s", strerror(errno));
}

static void want_out(conn *c, int on)
{
    if (c->want_out == on)
        return;
    c->want_out = on;
    set_events(c, EPOLLIN | (on ? EPOLLOUT : 0), EPOLL_CTL_MOD);
}

/* Puts every HTTP/2 stream slot in the free list. */
static void free_slots(conn *c)
{
    c->free = NULL;
    for (int i = c->r->streams - 1; i >= 0; i--) {
        c->slots[i].next = c->free;
        c->free = &c->slots[i];
    }
}

/* Drops the socket and the HTTP/2 session; what was in flight is lost (not answered). */
static void conn_close(conn *c)
{
    run *r = c->r;

    if (c->h2 != NULL) {
        c->dying = 1;
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
        c->dying = 0;
        r->inflight -= (uint64_t)c->active;
        c->active = 0;
        c->goaway = 0;
        free_slots(c);
        c->out_len = c->out_off = 0;
    } else if (c->busy) {
        r->inflight--;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = C_CLOSED;
    c->busy = c->in_body = c->want_out = 0;
    c->rlen = c->scanned = 0;
}

/* Counts an error of the kind, drops the connection and, unless the run is ending, makes it again
 * RETRY_MS later (a server that is down is not hammered). Returns -1. */
static int fail(conn *c, int kind)
{
    run *r = c->r;

    r->err[kind]++;
    conn_close(c);
    if (r->phase != P_DRAIN) {
        c->state = C_WAIT;
        c->retry_at = now_ns() + RETRY_MS * NS_PER_MS;
        r->waiting++;
    }
    return -1;
}

static int write_error(int e)
{
    return e == EPIPE || e == ECONNRESET ? E_RESET : E_WRITE;
}

/* Writes p[*off .. len): 1 when all is written, 0 when the socket is full, -1 after a failure. */
static int send_all(conn *c, const void *p, size_t len, size_t *off)
{
    while (*off < len) {
        ssize_t n = send(c->fd, (const char *)p + *off, len - *off, MSG_NOSIGNAL);

        if (n > 0)
            *off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        else
            return fail(c, write_error(errno));
    }
    return 1;
}

/* ---- HTTP/1.1 ---- */

static void h1_write(conn *c)
{
    int rc = send_all(c, c->one.req->raw, c->one.req->len, &c->woff);

    if (rc >= 0)
        want_out(c, rc == 0);
}

static void h1_send(conn *c, uint64_t now)
{
    begin(c, &c->one, now);
    c->busy = 1;
    c->woff = 0;
    c->r->inflight++;
    h1_write(c);
}

/* "HTTP/1.x NNN": the status, or -1. */
static int status_of(const char *p, size_t n)
{
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' || (n > 12 && p[12] != ' '))
        return -1;
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    return (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
}

static int has_close(const char *v, size_t n)
{
    while (n > 0) {
        const char *comma = memchr(v, ',', n);
        size_t len = comma ? (size_t)(comma - v) : n, tn;
        const char *t;

        tn = trim(v, v + len, &t);
        if (name_is(t, tn, "close"))
            return 1;
        if (comma == NULL)
            break;
        n -= len + 1;
        v = comma + 1;
    }
    return 0;
}

/* The response head [p, p + n) (its last 4 bytes CRLF CRLF): its status, *body the length of
 * its body, *close whether the server closes; -1 when its length is not given. */
static int parse_head(const conn *c, const char *p, size_t n, uint64_t *body, int *close)
{
    const char *lim = p + n - 2, *eol = memchr(p, '\r', n);
    int status = status_of(p, (size_t)(eol - p)), chunked = 0;
    int64_t clen = -1;

    *close = 0;
    for (const char *line = eol + 2; status >= 0 && line < lim; line = eol + 2) {
        const char *colon, *v;
        size_t vn, nn;

        eol = memchr(line, '\r', (size_t)(lim + 2 - line));
        colon = memchr(line, ':', (size_t)(eol - line));
        if (eol[1] != '\n' || colon == NULL)
            return -1;
        nn = (size_t)(colon - line);
        vn = trim(colon + 1, eol, &v);
        if (name_is(line, nn, "content-length")) {
            int64_t l = parse_length(v, vn);

            if (l < 0 || (clen >= 0 && l != clen))
                return -1;
            clen = l;
        } else if (name_is(line, nn, "transfer-encoding")) {
            chunked = 1;
        } else if (name_is(line, nn, "connection")) {
            *close |= has_close(v, vn);
        }
    }
    if (status < 0 || chunked)
        return -1;
    if (c->one.req->head || status == 204 || status == 304 || (status >= 100 && status < 200))
        *body = 0;
    else if (clen >= 0)
        *body = (uint64_t)clen;
    else
        return -1;
    return status;
}

/* Parses the response head in rbuf[0 .. rlen), 1xx ones skipped: 1 when it is there (status,
 * body_left and close_after set, the body bytes read with it consumed), 0 when more is needed,
 * -1 on a protocol error. */
static int h1_head(conn *c)
{
    for (;;) {
        char *end = memmem(c->rbuf + c->scanned, c->rlen - c->scanned, "\r\n\r\n", 4);
        size_t hlen, extra;
        int status;

        if (end == NULL) {
            c->scanned = c->rlen > 3 ? c->rlen - 3 : 0;
            return c->rlen == sizeof(c->rbuf) ? -1 : 0;
        }
        hlen = (size_t)(end + 4 - c->rbuf);
        status = parse_head(c, c->rbuf, hlen, &c->body_left, &c->close_after);
        if (status < 0 || status == 101)
            return -1;
        extra = c->rlen - hlen;
        if (status < 200) {
            memmove(c->rbuf, c->rbuf + hlen, extra);
            c->rlen = extra;
            c->scanned = 0;
            continue;
        }
        /* No pipelining: anything after this response's body was never asked for. */
        if (extra > c->body_left)
            return -1;
        c->body_left -= extra;
        c->one.status = status;
        c->rlen = c->scanned = 0;
        return 1;
    }
}

static void conn_open(conn *c, uint64_t now);

static void h1_done(conn *c, uint64_t now)
{
    run *r = c->r;
    /* A response before the whole request was written: the rest would be read as a request. */
    int reopen = c->close_after || c->woff < c->one.req->len;

    c->busy = c->in_body = 0;
    complete(r, &c->one, now);
    if (reopen) {
        conn_close(c);
        r->reconnects++;
        if (may_send(r, now))
            conn_open(c, now);
    } else if (may_send(r, now)) {
        h1_send(c, now);
    }
}

/* recv gave n <= 0: nothing yet, or the connection is lost (an error while requests wait). */
static void lost(conn *c, ssize_t n)
{
    int idle;

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    idle = c->h2 ? c->active == 0 && (c->goaway || c->r->phase == P_DRAIN)
                 : !c->busy && c->r->phase == P_DRAIN;
    if (n == 0 && idle) {
        conn_close(c);
        if (c->r->phase != P_DRAIN) {
            c->r->reconnects++;
            conn_open(c, now_ns());
        }
        return;
    }
    fail(c, n < 0 && errno == ECONNRESET ? E_RESET : E_READ);
}

static void h1_readable(conn *c)
{
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
    uint64_t now;

    if (n <= 0) {
        lost(c, n);
        return;
    }
    now = now_ns();
    if (!c->busy) {
        fail(c, E_PROTOCOL);
        return;
    }
    if (c->in_body) {
        if ((uint64_t)n > c->body_left) {
            fail(c, E_PROTOCOL);
            return;
        }
        c->body_left -= (uint64_t)n;
    } else {
        int rc;

        c->rlen += (size_t)n;
        rc = h1_head(c);
        if (rc < 0)
            fail(c, E_PROTOCOL);
        if (rc <= 0)
            return;
    }
    if (c->body_left > 0)
        c->in_body = 1;
    else
        h1_done(c, now);
}

/* ---- HTTP/2 ---- */

static ssize_t h2_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    stream *s = source->ptr;
    size_t n = s->req->body_len - s->body_off;

    (void)session;
    (void)stream_id;
    (void)user_data;
    if (n > length)
        n = length;
    memcpy(buf, s->req->body + s->body_off, n);
    s->body_off += n;
    if (s->body_off == s->req->body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data)
{
    stream *s;

    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    /* nghttp2 has checked it is 3 digits; a final status replaces a 1xx one. */
    if (s != NULL && valuelen == 3)
        s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    return 0;
}

static int h2_on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                       void *user_data)
{
    conn *c = user_data;
    stream *s = nghttp2_session_get_stream_user_data(session, stream_id);

    if (s == NULL || c->dying)
        return 0;
    if (error_code == NGHTTP2_NO_ERROR && s->status > 0) {
        complete(c->r, s, c->now);
    } else {
        c->r->err[error_code == NGHTTP2_NO_ERROR ? E_PROTOCOL : E_RESET]++;
        c->r->inflight--;
    }
    s->next = c->free;
    c->free = s;
    c->active--;
    return 0;
}

static int h2_on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    conn *c = user_data;

    (void)session;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        c->goaway = 1; /* no new stream here; the connection is made again once it is idle */
    return 0;
}

static void h2_session(conn *c)
{
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_WINDOW}};

    if (nghttp2_session_client_new(&c->h2, c->r->cb, c) != 0 ||
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, H2_WINDOW) != 0)
        die(1, "cannot start an HTTP/2 session");
}

/* Opens streams up to STREAMS in flight. */
static int h2_fill(conn *c, uint64_t now)
{
    while (c->free != NULL && !c->goaway && may_send(c->r, now)) {
        stream *s = c->free;
        nghttp2_data_provider body = {.source.ptr = s, .read_callback = h2_body};
        const nghttp2_nv *nv;

        begin(c, s, now);
        nv = c->r->cases[s->k].list.nv + s->req->nv_off;
        if (nghttp2_submit_request(c->h2, NULL, nv, s->req->nv_len,
                                   s->req->body_len > 0 ? &body : NULL, s) < 0)
            return fail(c, E_PROTOCOL);
        c->free = s->next;
        c->active++;
        c->r->inflight++;
    }
    return 0;
}

static void out_append(conn *c, const uint8_t *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        c->out_cap = c->out_len + n > 2 * c->out_cap ? c->out_len + n : 2 * c->out_cap;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* Writes what nghttp2 has to send, its frames gathered into few writes. */
static int h2_flush(conn *c)
{
    for (;;) {
        int rc = send_all(c, c->out, c->out_len, &c->out_off);

        if (rc <= 0) {
            if (rc == 0)
                want_out(c, 1);
            return rc;
        }
        c->out_len = c->out_off = 0;
        while (c->out_len < OUT_BATCH) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(c->h2, &p);

            if (n < 0)
                return fail(c, E_PROTOCOL);
            if (n == 0)
                break;
            out_append(c, p, (size_t)n);
        }
        if (c->out_len == 0) {
            want_out(c, 0);
            return 0;
        }
    }
}

static void h2_kick(conn *c, uint64_t now)
{
    c->now = now; /* for the streams nghttp2 closes while sending */
    if (h2_fill(c, now) < 0 || h2_flush(c) < 0)
        return;
    /* Neither side has anything more to say (GOAWAY, all streams done): a new connection. */
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        conn_close(c);
        if (c->r->phase != P_DRAIN) {
            c->r->reconnects++;
            conn_open(c, now);
        }
    }
}

static void h2_readable(conn *c)
{
    ssize_t n = recv(c->fd, c->rbuf, sizeof(c->rbuf), 0);

    if (n <= 0) {
        lost(c, n);
        return;
    }
    c->now = now_ns(); /* the end of the responses this read completes */
    if (nghttp2_session_mem_recv(c->h2, (const uint8_t *)c->rbuf, (size_t)n) < 0) {
        fail(c, E_PROTOCOL);
        return;
    }
    h2_kick(c, c->now);
}

/* ---- events ---- */

static void on_connected(conn *c, uint64_t now)
{
    c->state = C_OPEN;
    c->r->connected = 1;
    if (c->r->h2) {
        h2_session(c);
        h2_kick(c, now);
    } else if (may_send(c->r, now)) {
        h1_send(c, now);
    }
}

static void connect_failed(conn *c, int e)
{
    c->r->connect_errno = e;
    fail(c, E_CONNECT);
}

static void conn_open(conn *c, uint64_t now)
{
    const struct addrinfo *a = c->r->addr;
    int one = 1;

    c->fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die(1, "socket: %s", strerror(errno));
    c->gen++;
    /* Each request is written whole: no wait for the ACK of the previous segment (Nagle). */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, a->ai_addr, a->ai_addrlen) == 0) {
        set_events(c, EPOLLIN, EPOLL_CTL_ADD);
        on_connected(c, now);
    } else if (errno == EINPROGRESS) {
        c->state = C_CONNECTING;
        set_events(c, EPOLLOUT, EPOLL_CTL_ADD);
    } else {
        connect_failed(c, errno);
    }
}

static void on_connecting(conn *c)
{
    int e = 0;
    socklen_t len = sizeof(e);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0)
        e = errno;
    if (e != 0) {
        connect_failed(c, e);
        return;
    }
    set_events(c, EPOLLIN, EPOLL_CTL_MOD);
    on_connected(c, now_ns());
}

static void on_event(conn *c, uint32_t events)
{
    unsigned gen = c->gen;

    if (c->state == C_CONNECTING) {
        on_connecting(c);
        return;
    }
    if (c->state != C_OPEN)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (c->r->h2)
            h2_readable(c);
        else
            h1_readable(c);
    }
    if (!(events & EPOLLOUT) || c->state != C_OPEN || c->gen != gen)
        return;
    if (c->r->h2)
        h2_kick(c, now_ns());
    else if (c->busy)
        h1_write(c);
}

static void retry_due(run *r, conn *cs, uint64_t now)
{
    for (int i = 0; i < r->conns && r->waiting > 0; i++) {
        if (cs[i].state == C_WAIT && cs[i].retry_at <= now) {
            r->waiting--;
            conn_open(&cs[i], now);
        }
    }
}

static int ms_until(uint64_t t, uint64_t now)
{
    return t > now ? (int)((t - now + NS_PER_MS - 1) / NS_PER_MS) : 0;
}

static void poll_once(run *r, conn *cs, int timeout)
{
    struct epoll_event ev[MAX_EVENTS];
    int n;

    if (r->waiting > 0 && timeout > 1)
        timeout = 1; /* a connection to make again soon */
    n = epoll_wait(r->ep, ev, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR)
        die(1, "epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++)
        on_event(ev[i].data.ptr, ev[i].events);
    if (r->waiting > 0 && r->phase == P_LOAD)
        retry_due(r, cs, now_ns());
}

/* Makes every connection, before the clock starts; 1 when at least one is open. */
static int connect_all(run *r, conn *cs)
{
    uint64_t now = now_ns(), until = now + CONNECT_MS * NS_PER_MS;
    int pending = 1;

    for (int i = 0; i < r->conns; i++)
        conn_open(&cs[i], now);
    while (pending && now < until) {
        poll_once(r, cs, ms_until(until, now));
        now = now_ns();
        pending = 0;
        for (int i = 0; i < r->conns; i++)
            pending |= cs[i].state == C_CONNECTING;
    }
    return r->connected;
}

static void stop_sending(run *r, conn *cs, uint64_t now)
{
    r->phase = P_DRAIN;
    r->stopped = now;
    r->drain_end = now + DRAIN_MS * NS_PER_MS;
    r->waiting = 0;
    for (int i = 0; i < r->conns; i++) {
        if (cs[i].state == C_CONNECTING)
            conn_close(&cs[i]);
        cs[i].state = cs[i].state == C_WAIT ? C_CLOSED : cs[i].state;
    }
}

static void load(run *r, conn *cs)
{
    uint64_t now = now_ns();

    r->phase = P_LOAD;
    r->start = now;
    r->end = now + r->duration_ns;
    if (r->paired) {
        r->first_slice = r->start / r->slice_ns;
        r->last_slice = r->end / r->slice_ns;
    }
    for (int i = 0; i < r->conns; i++) {
        if (cs[i].state == C_OPEN && r->h2)
            h2_kick(&cs[i], now);
        else if (cs[i].state == C_OPEN && !cs[i].busy)
            h1_send(&cs[i], now);
    }
    for (;;) {
        now = now_ns();
        if (r->phase == P_LOAD && now >= r->end)
            stop_sending(r, cs, now);
        if (r->phase == P_DRAIN && (r->inflight == 0 || now >= r->drain_end))
            break;
        poll_once(r, cs, ms_until(r->phase == P_LOAD ? r->end : r->drain_end, now));
    }
    r->err[E_TIMEOUT] += r->inflight;
}

/* ---- report ---- */

static void print_case(const run *r, int k)
{
    const pcase *pc = &r->cases[k];
    uint64_t ms = 0;

    if (!r->paired) {
        ms = r->duration_ns / NS_PER_MS - WARMUP_MS;
    } else {
        for (uint64_t s = r->first_slice + 1; s < r->last_slice; s++)
            ms += (s & 1) == (uint64_t)k ? (r->slice_ns - r->guard_ns) / NS_PER_MS : 0;
    }
    printf(",\"%c\":{\"requests\":%" PRIu64 ",\"counted\":%" PRIu64 ",\"ms\":%" PRIu64
           ",\"req_per_s\":%.1f,\"mean_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
           "\"p99_us\":%.1f,\"status\":{\"2xx\":%" PRIu64 ",\"3xx\":%" PRIu64 ",\"4xx\":%" PRIu64
           ",\"5xx\":%" PRIu64 ",\"other\":%" PRIu64 "}}",
           'a' + k, pc->done, pc->counted, ms, ms ? pc->counted * 1000.0 / (double)ms : 0.0,
           pc->counted ? (double)pc->sum_ns / (double)pc->counted / 1000 : 0.0,
           hist_pct(pc->hist, pc->counted, 50), hist_pct(pc->hist, pc->counted, 90),
           hist_pct(pc->hist, pc->counted, 99), pc->status[2], pc->status[3], pc->status[4],
           pc->status[5], pc->status[0] + pc->status[1]);
}

static void report(const run *r)
{
    int ncases = r->paired ? 2 : 1;
    uint64_t total = 0;

    for (int k = 0; k < ncases; k++)
        total += r->cases[k].done;
    printf("BENCH {\"mode\":\"%s\",\"connections\":%d,\"streams\":%d,\"seconds\":%.3f",
           r->h2 ? "h2" : "h1", r->conns, r->streams, (double)(r->stopped - r->start) / 1e9);
    if (r->paired)
        printf(",\"slice_ms\":%" PRIu64 ",\"guard_ms\":%" PRIu64, r->slice_ns / NS_PER_MS,
               r->guard_ns / NS_PER_MS);
    printf(",\"requests\":%" PRIu64 ",\"reconnects\":%" PRIu64 ",\"errors\":{", total,
           r->reconnects);
    for (int e = 0; e < E_N; e++)
        printf("%s\"%s\":%" PRIu64, e ? "," : "", ERR_NAMES[e], r->err[e]);
    putchar('}');
    for (int k = 0; k < ncases; k++)
        print_case(r, k);
    puts("}");
}

/* ---- arguments ---- */

#define USAGE                                                                                      \
    "usage: pairload [-2] -c CONNECTIONS [-m STREAMS] -d SECONDS [-s SLICE_MS -g GUARD_MS] HOST "  \
    "PORT FILE_A [FILE_B]"

static long number(int opt, const char *arg, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min || v > max)
        die(2, "-%c: expected a number from %ld to %ld, not '%s'", opt, min, max, arg);
    return v;
}

static uint64_t seconds(const char *arg)
{
    char *end;
    double v = strtod(arg, &end);

    if (end == arg || (*end != '\0' && strcmp(end, "s") != 0) || !(v >= 0.2 && v <= 86400))
        die(2, "-d: expected seconds from 0.2 to 86400, not '%s'", arg);
    return (uint64_t)(v * 1e9);
}

static void parse_args(run *r, int argc, char **argv)
{
    long slice = -1, guard = -1;
    int opt, streams = 0, files;

    opterr = 0; /* one line on stderr: ours */
    while ((opt = getopt(argc, argv, "2c:m:d:s:g:")) != -1) {
        switch (opt) {
        case '2':
            r->h2 = 1;
            break;
        case 'c':
            r->conns = (int)number(opt, optarg, 1, 10000);
            break;
        case 'm':
            streams = (int)number(opt, optarg, 1, 1000);
            break;
        case 'd':
            r->duration_ns = seconds(optarg);
            break;
        case 's':
            slice = number(opt, optarg, 1, 60000);
            break;
        case 'g':
            guard = number(opt, optarg, 0, 60000);
            break;
        default:
            die(2, "-%c: unknown option or missing value; " USAGE, optopt);
        }
    }
    files = argc - optind - 2;
    if (r->conns == 0 || r->duration_ns == 0 || files < 1 || files > 2)
        die(2, USAGE);
    if (streams > 0 && !r->h2)
        die(2, "-m: streams are HTTP/2's (-2)");
    r->streams = streams > 0 ? streams : 1;
    r->paired = files == 2;
    if (!r->paired && (slice >= 0 || guard >= 0))
        die(2, "-s and -g are for paired runs (two files)");
    slice = slice < 0 ? 50 : slice;
    guard = guard < 0 ? 5 : guard;
    if (guard >= slice)
        die(2, "-g: the guard (%ld ms) must be shorter than the slice (%ld ms)", guard, slice);
    r->slice_ns = (uint64_t)slice * NS_PER_MS;
    r->guard_ns = (uint64_t)guard * NS_PER_MS;
    r->host = argv[optind];
    r->port = argv[optind + 1];
}

static void resolve(run *r)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(r->host, r->port, &hints, &r->addr);

    if (rc != 0)
        die(2, "%s port %s: %s", r->host, r->port, gai_strerror(rc));
}

static nghttp2_session_callbacks *h2_callbacks(void)
{
    nghttp2_session_callbacks *cb;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        die(1, "out of memory");
    nghttp2_session_callbacks_set_on_header_callback(cb, h2_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2_on_frame);
    return cb;
}

static conn *make_conns(run *r)
{
    conn *cs = calloc((size_t)r->conns, sizeof(*cs));

    if (cs == NULL)
        die(1, "out of memory");
    for (int i = 0; i < r->conns; i++) {
        conn *c = &cs[i];

        c->r = r;
        c->fd = -1;
        /* Each connection starts at another place in each list, as rotate.lua's threads. */
        for (int k = 0; k < 2; k++)
            c->pos[k] = r->cases[k].list.n ? ((size_t)i + 1) * 7919 % r->cases[k].list.n : 0;
        if (r->h2) {
            c->slots = calloc((size_t)r->streams, sizeof(stream));
            if (c->slots == NULL)
                die(1, "out of memory");
            free_slots(c);
        }
    }
    return cs;
}

static void cleanup(run *r, conn *cs)
{
    for (int i = 0; i < r->conns; i++) {
        conn_close(&cs[i]);
        free(cs[i].slots);
        free(cs[i].out);
    }
    free(cs);
    for (int k = 0; k < 2; k++) {
        free(r->cases[k].list.buf);
        free(r->cases[k].list.v);
        free(r->cases[k].list.nv);
    }
    if (r->cb != NULL)
        nghttp2_session_callbacks_del(r->cb);
    freeaddrinfo(r->addr);
    close(r->ep);
}

int main(int argc, char **argv)
{
    static run r; /* the histograms: too large for the stack */
    conn *cs;

    parse_args(&r, argc, argv);
    load_requests(&r.cases[0].list, argv[optind + 2], r.h2);
    if (r.paired)
        load_requests(&r.cases[1].list, argv[optind + 3], r.h2);
    resolve(&r);
    signal(SIGPIPE, SIG_IGN);
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    if (r.ep < 0)
        die(1, "epoll_create1: %s", strerror(errno));
    r.cb = r.h2 ? h2_callbacks() : NULL;
    cs = make_conns(&r);
    if (!connect_all(&r, cs))
        die(1, "cannot connect to %s port %s: %s", r.host, r.port,
            strerror(r.connect_errno ? r.connect_errno : ETIMEDOUT));
    load(&r, cs);
    report(&r);
    cleanup(&r, cs);
    return 0;
}
