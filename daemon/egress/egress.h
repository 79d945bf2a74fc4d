/* The egress part: the filtering proxy sandboxes reach the network through. */
#pragma once

#include "core/manager.h"

int egress_init(manager *m);
void egress_free(manager *m);
