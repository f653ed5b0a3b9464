/* Types shared by the module, krenalis-keys and the unit tests. */
#ifndef KA_H
#define KA_H

#include <stddef.h>
#include <stdint.h>

#define KA_ID_LEN 12        /* organization, workspace, connection and key IDs */
#define KA_API_BODY_LEN 49  /* characters after "api_" */
#define KA_API_TOKEN_LEN 53 /* "api_" + body */
#define KA_PAYLOAD_LEN 32   /* random bytes inside an API key */
#define KA_WRITE_KEY_LEN 32 /* event write keys: [A-Za-z0-9]{32} */
#define KA_ORG_KEY_CHARS 43 /* alphanumerics after "org_" in the organizations key */
#define KA_ORG_KEY_LEN (4 + KA_ORG_KEY_CHARS)
#define KA_DIGEST_LEN 32      /* HMAC-SHA-256 */
#define KA_SECRET_LEN 32      /* store secret */
#define KA_MAX_WRITE_KEYS 20  /* per connection */
#define KA_HINT_MAX 16        /* 4 + "..." + 6 */
#define KA_NAME_MAX 200       /* names of organizations, workspaces, connections, keys */
#define KA_MAX_TOKEN_LEN 8192 /* a Bearer token is read up to this length (token.c) */

/* Where the organizations key comes from unless KrenalisAuthOrganizationsKeyEnv says otherwise;
 * krenalis-keys check reads it too. */
#define KA_ORGS_KEY_ENV "KRENALIS_ORGANIZATIONS_API_KEY"

typedef enum { KA_KEY_NONE = 0, KA_KEY_API, KA_KEY_WRITE, KA_KEY_ORGS } ka_key_type;

/* KrenalisAuthEndpoint, krenalis-keys check --endpoint (names in names.h). */
typedef enum { KA_EP_AUTO = 0, KA_EP_API, KA_EP_INGESTION, KA_EP_SETTINGS, KA_EP_ORGS } ka_endpoint;

/* KrenalisAuthWorkspace, krenalis-keys check --workspace-policy (names in names.h). */
typedef enum { KA_WS_OPTIONAL = 0, KA_WS_REQUIRED, KA_WS_FORBIDDEN } ka_ws_policy;

/* What a successful authentication hands to the backend (SPEC §8). Empty strings mean "none". */
typedef struct {
    ka_key_type type;
    char key_id[16]; /* a key ID, or "organizations" */
    char org[KA_ID_LEN + 1];
    char ws[KA_ID_LEN + 1];
    char conn[KA_ID_LEN + 1];
} ka_identity;

#include "names.h"

#endif
