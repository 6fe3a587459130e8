/*
 * sqlite: SQLite's amalgamation, compiled unchanged, serving a realistic request.
 *
 * Each request opens a fresh in-memory database, fills an `orders` table with `?rows=` rows
 * (default 1000, deterministic), runs the SQL in the request body (default: a revenue report
 * per region) and returns the result of the last statement that produced columns as JSON:
 * {"columns": [...], "rows": [[...], ...], "sqlite_version": "..."}. A SQL error is a 400.
 */
#include "sqlite3.h"
#include "wagi.h"

static const char *DEFAULT_SQL =
    "SELECT region, count(*) AS orders, round(sum(amount), 2) AS revenue "
    "FROM orders GROUP BY region ORDER BY region";

static const char *SEED_SQL =
    "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT NOT NULL, region TEXT NOT NULL,"
    " amount REAL NOT NULL, created TEXT NOT NULL);"
    "INSERT INTO orders(id, customer, region, amount, created)"
    " WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1)"
    " SELECT i, 'customer-' || (i % 97),"
    " CASE i % 4 WHEN 0 THEN 'east' WHEN 1 THEN 'north' WHEN 2 THEN 'south' ELSE 'west' END,"
    " (i * 37 % 1000) / 10.0, date('2026-01-01', '+' || (i % 365) || ' days') FROM seq;";

static void json_string(const unsigned char *s) {
    fputc('"', stdout);
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (*s < 0x20) {
                printf("\\u%04x", *s);
            } else {
                fputc(*s, stdout);
            }
        }
    }
    fputc('"', stdout);
}

static int fail(int status, const char *reason, const char *message) {
    printf("Status: %d %s\nContent-Type: application/json\n\n{\"error\": ", status, reason);
    json_string((const unsigned char *)message);
    fputs("}\n", stdout);
    return 0;
}

int main(void) {
    size_t len = 0;
    char *body = wagi_read_body(&len);
    const char *sql = len > 0 ? body : DEFAULT_SQL;
    long rows = wagi_query_long("rows", 1000, 0, 1000000);

    sqlite3 *db = NULL;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) {
        return fail(500, "Internal Server Error", sqlite3_errmsg(db));
    }
    sqlite3_stmt *seed = NULL;
    const char *seed_tail = SEED_SQL;
    while (*seed_tail != '\0') {
        if (sqlite3_prepare_v2(db, seed_tail, -1, &seed, &seed_tail) != SQLITE_OK) {
            return fail(500, "Internal Server Error", sqlite3_errmsg(db));
        }
        if (seed == NULL) {
            break;
        }
        if (sqlite3_bind_parameter_count(seed) > 0) {
            sqlite3_bind_int64(seed, 1, rows);
        }
        while (sqlite3_step(seed) == SQLITE_ROW) {
        }
        sqlite3_finalize(seed);
    }

    /* Run every statement; buffer nothing but print the last result set that has columns. */
    const char *tail = sql;
    sqlite3_stmt *stmt = NULL;
    int printed = 0;
    while (tail != NULL && *tail != '\0') {
        if (sqlite3_prepare_v2(db, tail, -1, &stmt, &tail) != SQLITE_OK) {
            return fail(400, "Bad Request", sqlite3_errmsg(db));
        }
        if (stmt == NULL) {
            break; /* trailing whitespace or comment */
        }
        int ncol = sqlite3_column_count(stmt);
        int is_last = 1;
        for (const char *p = tail; *p != '\0'; p++) {
            if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r' && *p != ';') {
                is_last = 0;
                break;
            }
        }
        if (ncol == 0 || !is_last) {
            int rc;
            while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            }
            if (rc != SQLITE_DONE) {
                return fail(400, "Bad Request", sqlite3_errmsg(db));
            }
            sqlite3_finalize(stmt);
            continue;
        }
        fputs("Content-Type: application/json\n\n{\"columns\": [", stdout);
        for (int i = 0; i < ncol; i++) {
            if (i > 0) {
                fputs(", ", stdout);
            }
            json_string((const unsigned char *)sqlite3_column_name(stmt, i));
        }
        fputs("], \"rows\": [", stdout);
        int rc, first = 1;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            fputs(first ? "[" : ", [", stdout);
            first = 0;
            for (int i = 0; i < ncol; i++) {
                if (i > 0) {
                    fputs(", ", stdout);
                }
                switch (sqlite3_column_type(stmt, i)) {
                case SQLITE_INTEGER: printf("%lld", sqlite3_column_int64(stmt, i)); break;
                case SQLITE_FLOAT: printf("%.17g", sqlite3_column_double(stmt, i)); break;
                case SQLITE_NULL: fputs("null", stdout); break;
                default: json_string(sqlite3_column_text(stmt, i)); break;
                }
            }
            fputc(']', stdout);
        }
        fputs("], \"sqlite_version\": ", stdout);
        json_string((const unsigned char *)sqlite3_libversion());
        fputs("}\n", stdout);
        sqlite3_finalize(stmt);
        printed = 1;
        /* An error mid-way still ends the JSON document; report it on stderr. */
        if (rc != SQLITE_DONE) {
            fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(db));
        }
    }
    if (!printed) {
        fputs("Content-Type: application/json\n\n{\"columns\": [], \"rows\": [], \"sqlite_version\": ",
              stdout);
        json_string((const unsigned char *)sqlite3_libversion());
        fputs("}\n", stdout);
    }
    sqlite3_close(db);
    free(body);
    return 0;
}
