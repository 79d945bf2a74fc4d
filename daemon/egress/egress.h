/* The egress part: the filtering proxy sandboxes reach the network through. */
#pragma once

#include "core/manager.h"

/* What the part tells the composition root (main.c sets it before egress_init()). */
typedef struct egress_hooks {
        void *userdata;
        /* The proxy denied a connection of sandbox_id (its audit record is written). */
        void (*denied)(void *userdata, const char *sandbox_id);
} egress_hooks;
void egress_set_hooks(const egress_hooks *hooks);

/* The proxy (m->proxy; NULL when it cannot start: Mode=proxy tasks are refused). */
int egress_init(manager *m);
void egress_free(manager *m);
