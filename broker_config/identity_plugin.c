/*
 * framewire's Mosquitto plugin: client ids bound to users, shared subscriptions bound to
 * roles, and each agent's own topics under the client id it owns.
 *
 * Why a plugin: Mosquitto 2.0's password and ACL files cannot say "client id X belongs to
 * user U" (any client, anonymous or logged in as another user, may connect as `ledger` and
 * take over the ledger's session), and the ACL file allows every SUBSCRIBE (it only filters
 * delivery, so a stranger in the `$share/inference/...` group is dealt its share of the
 * frames, which it may not read and which then reach nobody). Its `%c` patterns apply to
 * every client, anonymous ones included, with whatever client id they choose.
 *
 * Rules, all configured by options that broker_config/render.py writes:
 *   plugin_opt_owner_<user> <prefix>[,<prefix>...]
 *       A client id equal to a prefix, or starting with prefix + "-", belongs to <user>
 *       (the longest prefix wins). Nobody else, anonymous clients included, may connect
 *       with it.
 *   plugin_opt_agents <user>[,<user>...]
 *       These users must connect with a client id of their own (or one the broker assigned,
 *       "auto-..."), and only under their own id do they get the own-topic rights below.
 *   plugin_opt_own_write <topic>[,<topic>...]   plugin_opt_own_read <topic>[,...]
 *       Topics an agent may write / read, "%c" standing for its client id.
 *   plugin_opt_share_<group> <user>[,<user>...]
 *       Only these users may subscribe to $share/<group>/...; every other shared
 *       subscription is refused.
 *   plugin_opt_bridge_<user> <prefix>[,<prefix>...]
 *       <user> is the bridge of a site broker, carrying the agents whose client ids fall
 *       under these prefixes (same rule as owner_). It must connect with a client id of
 *       its own (its session holds the site's answers). It may write those agents' own
 *       topics (own_write, "%c" being a carried id) and read their own_read topics, and
 *       never reads their own_write topics back: Mosquitto sends a bridge every retained
 *       message its subscriptions match on each reconnect, its own included, and the site
 *       would take its agents' old availability and status for news.
 * Anything else is left to the password and ACL files.
 *
 * Written against Mosquitto's plugin interface version 5 (Mosquitto 2.0 and later). The few
 * declarations it needs are copied from mosquitto_broker.h and mosquitto_plugin.h, so that
 * building it needs only a C compiler, not Mosquitto's development package.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct mosquitto;
typedef struct mosquitto_plugin_id_t mosquitto_plugin_id_t;
struct mosquitto_opt {
	char *key;
	char *value;
};
struct mosquitto_evt_acl_check {
	void *future;
	struct mosquitto *client;
	const char *topic;
	const void *payload;
	void *properties;
	int access;
	uint32_t payloadlen;
	uint8_t qos;
	bool retain;
	void *future2[4];
};
struct mosquitto_evt_basic_auth {
	void *future;
	struct mosquitto *client;
	char *username;
	char *password;
	void *future2[4];
};
typedef int (*MOSQ_FUNC_generic_callback)(int, void *, void *);
int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event,
		MOSQ_FUNC_generic_callback cb_func, const void *event_data, void *userdata);
int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event,
		MOSQ_FUNC_generic_callback cb_func, const void *event_data);
const char *mosquitto_client_id(const struct mosquitto *client);
const char *mosquitto_client_username(const struct mosquitto *client);
void mosquitto_log_printf(int level, const char *fmt, ...);

enum { EVT_ACL_CHECK = 2, EVT_BASIC_AUTH = 3 };
enum { ERR_SUCCESS = 0, ERR_NOMEM = 1, ERR_INVAL = 3, ERR_AUTH = 11, ERR_ACL_DENIED = 12,
	ERR_PLUGIN_DEFER = 17 };
enum { ACL_READ = 0x01, ACL_WRITE = 0x02, ACL_SUBSCRIBE = 0x04 };
enum { LOG_NOTICE = 1 << 1, LOG_WARNING = 1 << 2 };

#define ASSIGNED_PREFIX "auto-" /* Mosquitto's auto_id_prefix default */
#define ID_MAX 64              /* framewire identifiers: 1-64 of [A-Za-z0-9._-] */

struct named_list {
	char *name;
	char *items; /* comma-separated */
};

static mosquitto_plugin_id_t *plugin_id;
static struct named_list *owners, *shares, *bridges;
static int owner_count, share_count, bridge_count;
static char *agents, *own_write, *own_read;

/* Is the `len` bytes at `item` one of the comma-separated `list`? */
static bool in_list(const char *list, const char *item, size_t len)
{
	const char *p = list;
	while(p && *p){
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if(n == len && !strncmp(p, item, len)) return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

/* Length of the longest prefix in `prefixes` that `id` falls under, 0 if none. */
static size_t claim(const char *prefixes, const char *id)
{
	size_t best = 0;
	const char *p = prefixes;
	while(p && *p){
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if(n > best && !strncmp(id, p, n) && (id[n] == '\0' || id[n] == '-')) best = n;
		p = end ? end + 1 : NULL;
	}
	return best;
}

/* The user whose namespace holds `id`, or NULL when the id is nobody's. */
static const char *owner_of(const char *id)
{
	const char *who = NULL;
	size_t best = 0;
	for(int i = 0; i < owner_count; i++){
		size_t n = claim(owners[i].items, id);
		if(n > best){
			best = n;
			who = owners[i].name;
		}
	}
	return who;
}

/* An id that is safe to put in a topic: what framewire itself accepts as an identifier. */
static bool safe_id(const char *id)
{
	size_t n = strlen(id);
	if(n == 0 || n > ID_MAX || id[0] == '.' || strstr(id, "..")) return false;
	for(size_t i = 0; i < n; i++){
		char c = id[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
			|| c == '.' || c == '_' || c == '-';
		if(!ok) return false;
	}
	return true;
}

/* Does the `len` bytes of `pattern`, with each "%c" replaced by `id`, equal `topic`? */
static bool expands_to(const char *pattern, size_t len, const char *id, const char *topic)
{
	size_t id_len = strlen(id);
	for(size_t i = 0; i < len; i++){
		if(pattern[i] == '%' && i + 1 < len && pattern[i + 1] == 'c'){
			if(strncmp(topic, id, id_len)) return false;
			topic += id_len;
			i++;
		}else if(*topic++ != pattern[i]){
			return false;
		}
	}
	return *topic == '\0';
}

static bool own_topic(const char *patterns, const char *id, const char *topic)
{
	const char *p = patterns;
	while(p && *p){
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if(expands_to(p, n, id, topic)) return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

static bool is_agent(const char *user)
{
	return user && agents && in_list(agents, user, strlen(user));
}

/* The client-id prefixes a bridge user carries, or NULL when `user` is no bridge. */
static const char *carried_by(const char *user)
{
	if(!user) return NULL;
	for(int i = 0; i < bridge_count; i++){
		if(!strcmp(bridges[i].name, user)) return bridges[i].items;
	}
	return NULL;
}

/* Is `topic` one of `patterns` with "%c" standing for a safe client id under `prefixes`?
 * Each pattern holds "%c" once (render.py builds them so). */
static bool carried_topic(const char *patterns, const char *prefixes, const char *topic)
{
	const char *p = patterns;
	size_t topic_len = strlen(topic);
	while(p && *p){
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *hole = strstr(p, "%c");
		if(hole && hole + 2 <= p + n){
			size_t head = (size_t)(hole - p), tail = n - head - 2;
			size_t id_len = topic_len >= head + tail ? topic_len - head - tail : 0;
			if(id_len > 0 && id_len <= ID_MAX && !strncmp(topic, p, head)
					&& !strncmp(topic + head + id_len, hole + 2, tail)){
				char id[ID_MAX + 1];
				memcpy(id, topic + head, id_len);
				id[id_len] = '\0';
				if(safe_id(id) && claim(prefixes, id)) return true;
			}
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	const char *user = ed->username;
	(void)event;
	(void)userdata;
	if(!id) return ERR_PLUGIN_DEFER;
	const char *owner = owner_of(id);
	if(owner && (!user || strcmp(owner, user))){
		mosquitto_log_printf(LOG_NOTICE,
				"framewire: refused client id '%s' for %s%s: that id belongs to user '%s'",
				id, user ? "user " : "an anonymous client", user ? user : "", owner);
		return ERR_AUTH;
	}
	if(carried_by(user) && !owner){
		mosquitto_log_printf(LOG_NOTICE,
				"framewire: refused client id '%s' for user '%s': a bridge's id must be "
				"'%s' or start with '%s-'", id, user, user, user);
		return ERR_AUTH;
	}
	if(is_agent(user) && !owner && strncmp(id, ASSIGNED_PREFIX, strlen(ASSIGNED_PREFIX))){
		mosquitto_log_printf(LOG_NOTICE,
				"framewire: refused client id '%s' for user '%s': an agent's id must be "
				"'%s' or start with '%s-'", id, user, user, user);
		return ERR_AUTH;
	}
	return ERR_PLUGIN_DEFER;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *user = mosquitto_client_username(ed->client);
	const char *id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;
	if(ed->access == ACL_SUBSCRIBE && !strncmp(ed->topic, "$share/", 7)){
		const char *group = ed->topic + 7;
		const char *slash = strchr(group, '/');
		size_t n = slash ? (size_t)(slash - group) : strlen(group);
		for(int i = 0; i < share_count; i++){
			if(strlen(shares[i].name) == n && !strncmp(shares[i].name, group, n)
					&& user && in_list(shares[i].items, user, strlen(user))){
				return ERR_PLUGIN_DEFER;
			}
		}
		mosquitto_log_printf(LOG_NOTICE,
				"framewire: refused shared subscription '%s' for %s%s", ed->topic,
				user ? "user " : "an anonymous client", user ? user : "");
		return ERR_ACL_DENIED;
	}
	if((ed->access == ACL_WRITE || ed->access == ACL_READ) && id && is_agent(user)
			&& safe_id(id)){
		const char *owner = owner_of(id);
		const char *patterns = ed->access == ACL_WRITE ? own_write : own_read;
		if(owner && !strcmp(owner, user) && own_topic(patterns, id, ed->topic)){
			return ERR_SUCCESS;
		}
	}
	const char *carried = carried_by(user);
	if(carried && (ed->access == ACL_WRITE || ed->access == ACL_READ)){
		if(carried_topic(own_write, carried, ed->topic)){
			return ed->access == ACL_WRITE ? ERR_SUCCESS : ERR_ACL_DENIED;
		}
		if(ed->access == ACL_READ && carried_topic(own_read, carried, ed->topic)){
			return ERR_SUCCESS;
		}
	}
	return ERR_PLUGIN_DEFER;
}

static int add_named(struct named_list **list, int *count, const char *name, const char *items)
{
	struct named_list *grown = realloc(*list, (size_t)(*count + 1) * sizeof(**list));
	if(!grown) return ERR_NOMEM;
	*list = grown;
	grown[*count].name = strdup(name);
	grown[*count].items = strdup(items);
	if(!grown[*count].name || !grown[*count].items) return ERR_NOMEM;
	(*count)++;
	return ERR_SUCCESS;
}

static void free_named(struct named_list **list, int *count)
{
	for(int i = 0; i < *count; i++){
		free((*list)[i].name);
		free((*list)[i].items);
	}
	free(*list);
	*list = NULL;
	*count = 0;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int rc = ERR_SUCCESS;
	(void)userdata;
	plugin_id = identifier;
	for(int i = 0; i < option_count && rc == ERR_SUCCESS; i++){
		const char *key = options[i].key, *value = options[i].value;
		if(!strncmp(key, "owner_", 6)){
			rc = add_named(&owners, &owner_count, key + 6, value);
		}else if(!strncmp(key, "share_", 6)){
			rc = add_named(&shares, &share_count, key + 6, value);
		}else if(!strncmp(key, "bridge_", 7)){
			rc = add_named(&bridges, &bridge_count, key + 7, value);
		}else if(!strcmp(key, "agents")){
			free(agents);
			rc = (agents = strdup(value)) ? ERR_SUCCESS : ERR_NOMEM;
		}else if(!strcmp(key, "own_write")){
			free(own_write);
			rc = (own_write = strdup(value)) ? ERR_SUCCESS : ERR_NOMEM;
		}else if(!strcmp(key, "own_read")){
			free(own_read);
			rc = (own_read = strdup(value)) ? ERR_SUCCESS : ERR_NOMEM;
		}else{
			mosquitto_log_printf(LOG_WARNING, "framewire: unknown option plugin_opt_%s", key);
			rc = ERR_INVAL;
		}
	}
	if(rc != ERR_SUCCESS) return rc;
	rc = mosquitto_callback_register(plugin_id, EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(rc != ERR_SUCCESS) return rc;
	return mosquitto_callback_register(plugin_id, EVT_ACL_CHECK, on_acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, EVT_ACL_CHECK, on_acl_check, NULL);
	free_named(&owners, &owner_count);
	free_named(&shares, &share_count);
	free_named(&bridges, &bridge_count);
	free(agents);
	free(own_write);
	free(own_read);
	agents = own_write = own_read = NULL;
	return ERR_SUCCESS;
}
