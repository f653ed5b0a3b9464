/* The words of the configuration and of krenalis-keys, defined once: the module's directives
 * and Require lines and the command's options parse them here, with the same rules. */
#ifndef KA_NAMES_H
#define KA_NAMES_H

#include "ka.h"

/* The name of a key type in KRENALIS_KEY_TYPE, `Require krenalis-key-type` and listings: "api",
 * "event-write", "organizations"; "" for KA_KEY_NONE. */
const char *ka_key_type_name(ka_key_type t);

/* A `Require krenalis-key-type` word, exactly as ka_key_type_name writes it (the value the
 * backend sees is compared as it is): 1 and *out, or 0. */
int ka_key_type_parse(const char *s, ka_key_type *out);

/* Endpoint and workspace-policy names, case-insensitive like Apache's own keywords: 1 and
 * *out, or 0. */
int ka_endpoint_parse(const char *s, ka_endpoint *out);
int ka_ws_policy_parse(const char *s, ka_ws_policy *out);

/* The names for messages: "auto, api, ingestion, settings, organizations" and
 * "optional, required, forbidden". */
#define KA_ENDPOINT_NAMES "auto, api, ingestion, settings, organizations"
#define KA_WS_POLICY_NAMES "optional, required, forbidden"

#endif
