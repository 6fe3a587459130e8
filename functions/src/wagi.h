/*
 * Small helpers for WAGI-style functions (see docs/abi.md): the request body is
 * stdin, the request line and headers are CGI environment variables, and the
 * response is stdout, optionally starting with CGI headers and a blank line.
 *
 * Header-only so that each workload stays a single self-contained source file.
 */
#ifndef WASMOP_WAGI_H
#define WASMOP_WAGI_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read the whole request body from stdin. Returns a NUL-terminated buffer. */
static char *wagi_read_body(size_t *out_len) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        abort();
    }
    for (;;) {
        size_t n = fread(buf + len, 1, cap - len, stdin);
        len += n;
        if (n == 0) {
            break;
        }
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            if (buf == NULL) {
                abort();
            }
        }
    }
    buf[len] = '\0';
    *out_len = len;
    return buf;
}

static const char *wagi_env(const char *name, const char *fallback) {
    const char *value = getenv(name);
    return value != NULL ? value : fallback;
}

/*
 * An integer query parameter (`?name=123`), clamped to [min, max]; `fallback`
 * when absent or not a number. Clamping keeps a typo from asking for 2^63 MiB.
 */
static long wagi_query_long(const char *name, long fallback, long min, long max) {
    const char *query = wagi_env("QUERY_STRING", "");
    size_t name_len = strlen(name);
    const char *p = query;
    while (*p != '\0') {
        if (strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
            char *end = NULL;
            long value = strtol(p + name_len + 1, &end, 10);
            if (end == p + name_len + 1) {
                return fallback;
            }
            if (value < min) {
                return min;
            }
            if (value > max) {
                return max;
            }
            return value;
        }
        p = strchr(p, '&');
        if (p == NULL) {
            break;
        }
        p++;
    }
    return fallback;
}

/* A string query parameter copied into `out`; `fallback` when absent. */
static const char *wagi_query_str(const char *name, const char *fallback, char *out, size_t size) {
    const char *query = wagi_env("QUERY_STRING", "");
    size_t name_len = strlen(name);
    const char *p = query;
    while (*p != '\0') {
        if (strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
            const char *value = p + name_len + 1;
            size_t n = strcspn(value, "&");
            if (n >= size) {
                n = size - 1;
            }
            memcpy(out, value, n);
            out[n] = '\0';
            return out;
        }
        p = strchr(p, '&');
        if (p == NULL) {
            break;
        }
        p++;
    }
    return fallback;
}

#endif
