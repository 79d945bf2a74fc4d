/* Result printers for agentctl: exact JSON for scripts, aligned text for people. */
#include "print.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "proto.h"

static void json_string(FILE *f, const char *p, size_t n) {
        fputc('"', f);
        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char) p[i];
                switch (ch) {
                case '"': fputs("\\\"", f); break;
                case '\\': fputs("\\\\", f); break;
                case '\n': fputs("\\n", f); break;
                case '\r': fputs("\\r", f); break;
                case '\t': fputs("\\t", f); break;
                default:
                        if (ch < 0x20 || ch == 0x7f)
                                fprintf(f, "\\u%04x", ch);
                        else
                                fputc(ch, f);
                }
        }
        fputc('"', f);
}

static void json_base64(FILE *f, const unsigned char *p, size_t n) {
        static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        fputc('"', f);
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                if (i + 1 < n)
                        v |= (uint32_t) p[i + 1] << 8;
                if (i + 2 < n)
                        v |= p[i + 2];
                fputc(tbl[(v >> 18) & 63], f);
                fputc(tbl[(v >> 12) & 63], f);
                fputc(i + 1 < n ? tbl[(v >> 6) & 63] : '=', f);
                fputc(i + 2 < n ? tbl[v & 63] : '=', f);
        }
        fputc('"', f);
}

static void json_value(FILE *f, const msgpack_object *o) {
        switch (o->type) {
        case MSGPACK_OBJECT_NIL: fputs("null", f); break;
        case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", f); break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%" PRIu64, o->via.u64); break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%" PRId64, o->via.i64); break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64: fprintf(f, "%.17g", o->via.f64); break;
        case MSGPACK_OBJECT_STR: json_string(f, o->via.str.ptr, o->via.str.size); break;
        case MSGPACK_OBJECT_BIN: json_base64(f, (const unsigned char *) o->via.bin.ptr, o->via.bin.size); break;
        case MSGPACK_OBJECT_EXT: fputs("null", f); break;
        case MSGPACK_OBJECT_ARRAY:
                fputc('[', f);
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        if (i)
                                fputc(',', f);
                        json_value(f, &o->via.array.ptr[i]);
                }
                fputc(']', f);
                break;
        case MSGPACK_OBJECT_MAP:
                fputc('{', f);
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        if (i)
                                fputc(',', f);
                        const msgpack_object *k = &o->via.map.ptr[i].key;
                        if (k->type == MSGPACK_OBJECT_STR)
                                json_string(f, k->via.str.ptr, k->via.str.size);
                        else {
                                fputc('"', f);
                                json_value(f, k);
                                fputc('"', f);
                        }
                        fputc(':', f);
                        json_value(f, &o->via.map.ptr[i].val);
                }
                fputc('}', f);
                break;
        }
}

void print_json(const msgpack_object *o) {
        json_value(stdout, o);
        fputc('\n', stdout);
}

void print_nothing(const msgpack_object *o) {
}

static void scalar(FILE *f, const msgpack_object *o) {
        switch (o->type) {
        case MSGPACK_OBJECT_STR: fwrite(o->via.str.ptr, 1, o->via.str.size, f); break;
        case MSGPACK_OBJECT_BIN: fprintf(f, "<%u bytes>", o->via.bin.size); break;
        case MSGPACK_OBJECT_ARRAY:
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        if (i)
                                fputc(' ', f);
                        scalar(f, &o->via.array.ptr[i]);
                }
                break;
        default: json_value(f, o);
        }
}

static void human(const msgpack_object *o, int indent) {
        if (o->type == MSGPACK_OBJECT_MAP) {
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
                        printf("%*s", indent, "");
                        scalar(stdout, k);
                        if (v->type == MSGPACK_OBJECT_MAP && v->via.map.size > 0) {
                                printf(":\n");
                                human(v, indent + 2);
                        } else {
                                printf(": ");
                                scalar(stdout, v);
                                printf("\n");
                        }
                }
        } else if (o->type == MSGPACK_OBJECT_ARRAY) {
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        human(&o->via.array.ptr[i], indent);
                        if (o->via.array.ptr[i].type == MSGPACK_OBJECT_MAP)
                                printf("\n");
                }
        } else {
                printf("%*s", indent, "");
                scalar(stdout, o);
                printf("\n");
        }
}

void print_human(const msgpack_object *o) {
        human(o, 0);
}

static const msgpack_object *get(const msgpack_object *m, const char *key) {
        for (uint32_t i = 0; m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++)
                if (mp_str_eq(&m->via.map.ptr[i].key, key))
                        return &m->via.map.ptr[i].val;
        return NULL;
}

static void cell(const msgpack_object *o, int width) {
        char buf[256] = "-";
        if (o && o->type == MSGPACK_OBJECT_STR)
                snprintf(buf, sizeof(buf), "%.*s", (int) o->via.str.size, o->via.str.ptr);
        else if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                snprintf(buf, sizeof(buf), "%" PRIu64, o->via.u64);
        else if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                snprintf(buf, sizeof(buf), "%" PRId64, o->via.i64);
        if (width)
                printf("%-*s ", width, buf);
        else
                printf("%s", buf);
}

/* A table's leading columns that print a field as it is. */
typedef struct column {
        const char *key;
        int width;
} column;

static void cells(const msgpack_object *row, const column *c, size_t n) {
        for (size_t i = 0; i < n; i++)
                cell(get(row, c[i].key), c[i].width);
}

void print_task_list(const msgpack_object *o) {
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return print_human(o);
        printf("%-16s %-40s %s\n", "NAME", "SOURCE", "DESCRIPTION");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                const msgpack_object *t = &o->via.array.ptr[i];
                const msgpack_object *e = get(t, "error");
                cell(get(t, "name"), 16);
                cell(get(t, "source"), 40);
                if (e) {
                        printf("BROKEN: ");
                        cell(e, 0);
                } else
                        cell(get(t, "description"), 0);
                printf("\n");
        }
}

void print_sandbox_list(const msgpack_object *o) {
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return print_human(o);
        printf("%-14s %-10s %-8s %-8s %-5s %-20s %s\n", "ID", "TASK", "STATE", "PID", "EXIT", "STARTED", "WORKSPACE");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                static const column cols[] = { { "id", 14 }, { "task", 10 }, { "state", 8 }, { "pid", 8 }, { "exit_code", 5 } };
                const msgpack_object *s = &o->via.array.ptr[i];
                cells(s, cols, ELEMENTSOF(cols));
                const msgpack_object *t = get(s, "started_at");
                char when[32] = "-";
                if (t && t->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                        time_t sec = (time_t) (t->via.u64 / 1000);
                        struct tm tm;
                        localtime_r(&sec, &tm);
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
                }
                printf("%-20s ", when);
                cell(get(s, "workspace"), 0);
                printf("\n");
        }
}

void print_approval_list(const msgpack_object *o) {
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return print_human(o);
        printf("%-14s %-14s %-10s %-12s %-8s %s\n", "ID", "SANDBOX", "TASK", "KIND", "EXPIRES", "WHAT");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                static const column cols[] = { { "id", 14 }, { "sandbox", 14 }, { "task", 10 }, { "kind", 12 } };
                const msgpack_object *a = &o->via.array.ptr[i];
                cells(a, cols, ELEMENTSOF(cols));
                const msgpack_object *t = get(a, "expires_at");
                char left[32] = "-";
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                uint64_t now_ms = (uint64_t) now.tv_sec * 1000 + (uint64_t) now.tv_nsec / 1000000;
                if (t && t->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                        snprintf(left, sizeof(left), "%" PRIu64 "s", t->via.u64 > now_ms ? (t->via.u64 - now_ms + 999) / 1000 : 0);
                printf("%-8s ", left);
                cell(get(a, "what"), 0);
                printf("\n");
        }
}
