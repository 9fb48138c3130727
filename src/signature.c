/*-------------------------------------------------------------------------
 *
 * signature.c
 *	  Webhook signatures: the organizations' provider credentials
 *	  (prm.set_channel_credential, prm.remove_channel_credential) and the
 *	  check of a Twilio request's X-Twilio-Signature
 *	  (prm.verify_twilio_signature).
 *
 * Twilio signs every webhook request with its account's auth token: the
 * full URL it requested (scheme, host, port if any, path and query string,
 * exactly as configured), then for a POST each form parameter, sorted by
 * name, as the name immediately followed by its value, no separators; the
 * HMAC-SHA1 of that string under the auth token, in base64, is the header.
 * A name sent more than once (a JSON array here) contributes each of its
 * distinct values in byte order, as Twilio's own validators
 * (twilio-python's RequestValidator, twilio-node's webhooks) build it, so
 * the order a web framework hands the values over in does not matter.
 * Names and values are compared as bytes: for UTF-8 that is code point
 * order, which is what those validators sort by.
 *
 * Invariants:
 *	- the auth token leaves the table only into this file's HMAC: no function
 *	  returns it, no event or error carries it, and the copy read is wiped
 *	  after use.  Row-level security admits the admin level alone to
 *	  prm.channel_credential, and grant_access gives SELECT on it only to
 *	  roles with an admin level (access.c), so staff, readonly and webhook
 *	  roles cannot read it through any table, view or dump;
 *	- the comparison with the header takes the same time whatever bytes
 *	  differ (SignatureEqual); only the length, which is public (every
 *	  HMAC-SHA1 signature is 28 base64 characters), may end it early;
 *	- the caller is authorised (webhook level on the organization) before
 *	  the credential is read; a missing credential is an error, never a
 *	  quiet false, so a misconfigured clinic is noticed at the first request.
 *
 * Locking: none beyond the row a credential write replaces.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#if PG_VERSION_NUM >= 140000
#include "common/base64.h"
#include "common/hmac.h"
#include "common/sha1.h"
#endif

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_set_channel_credential);
PG_FUNCTION_INFO_V1(prm_remove_channel_credential);
PG_FUNCTION_INFO_V1(prm_verify_twilio_signature);

/* Bounds of what a webhook may hand in. */
#define SIG_MAX_URL_LEN 2048		/* characters of the request URL */
#define SIG_MAX_SIGNED_BYTES 262144 /* URL and parameters, as signed */
#define SIG_MAX_VALUES 1000			/* parameter values, arrays counted out */
#define SIG_MAX_TOKEN_LEN 128		/* characters of an auth token (Twilio's: 32) */
#define SIG_TWILIO_PREFIX_WHATSAPP "whatsapp:"

/* One form parameter value with its name, as signed. */
typedef struct SignaturePair
{
	const char *key;
	int			keylen;
	const char *value;
	int			valuelen;
} SignaturePair;

/* The parameters of a request, collected from the jsonb object. */
typedef struct SignatureParams
{
	SignaturePair *pairs;
	int			   npairs;
	int			   maxpairs;
	Size		   bytes; /* the sum of the names' and values' lengths */
} SignatureParams;

static void	 SignatureCheckProvider(const char *provider);
static void	 SignatureCheckToken(const char *token);
static void	 SignatureAddPair(SignatureParams *out, const JsonbValue *key,
							  const JsonbValue *value);
static void	 SignatureAddParam(SignatureParams *out, const JsonbValue *key,
							   JsonbValue *value);
static int	 SignaturePairCmp(const void *a, const void *b);
static void	 SignatureCollect(Jsonb *params, SignatureParams *out);
static char *SignatureBuildString(const char *url, SignatureParams *params);
static int64 SignatureRouteOrg(Jsonb *params);
static char *SignatureReadToken(int64 org_id);
static void	 SignatureCompute(const char *token, const char *data, Size len,
							  char *out);
static bool	 SignatureEqual(const char *expected, int expected_len,
							const char *given, int given_len);

/* Raise 22023 unless provider is one prm keeps credentials for. */
static void
SignatureCheckProvider(const char *provider)
{
	if (strcmp(provider, "twilio") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown provider \"%s\"", provider),
				 errdetail("The providers prm verifies webhook signatures for are: twilio.")));
}

/*
 * Raise 22023 unless token is printable ASCII without spaces (its length is
 * checked with the argument).  A token pasted with a trailing newline would
 * otherwise fail every verification without a word.
 */
static void
SignatureCheckToken(const char *token)
{
	const char *p;

	for (p = token; *p; p++)
		if (*p <= ' ' || *p > '~')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("auth_token contains a character that is not printable ASCII"),
					 errdetail("The character at position %d is a space, a control character or not ASCII.",
							   (int) (p - token) + 1),
					 errhint("Copy the token from the Twilio console without surrounding spaces or line breaks.")));
}

/*
 * prm.set_channel_credential(org_id bigint, provider text, auth_token text)
 * RETURNS void
 *	  Store (or replace) the organization's auth token of a provider.
 */
Datum
prm_set_channel_credential(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *provider = PrmTextArg(fcinfo, 1, "provider", 20);
	char			 *token = PrmTextArg(fcinfo, 2, "auth_token", SIG_MAX_TOKEN_LEN);
	Datum			  values[3];

	SignatureCheckProvider(provider);
	SignatureCheckToken(token);

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "INSERT INTO prm.channel_credential (org_id, provider, auth_token)"
			   " VALUES ($1, $2, $3)"
			   " ON CONFLICT (org_id, provider) DO UPDATE"
			   "   SET auth_token = EXCLUDED.auth_token, updated_at = pg_catalog.now()",
			   3, (Oid[]){INT8OID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(provider);
	values[2] = CStringGetTextDatum(token);
	PrmExecute(plan, values, NULL, false, 0);
	explicit_bzero(token, strlen(token));
	PrmEmitEvent(org_id, "channel_credential_set", "organization", org_id,
				 psprintf("{\"provider\": %s}", PrmJsonString(provider)));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.remove_channel_credential(org_id bigint, provider text) RETURNS boolean
 *	  Delete the organization's credential of a provider; true if there was one.
 */
Datum
prm_remove_channel_credential(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *provider = PrmTextArg(fcinfo, 1, "provider", 20);
	Datum			  values[2];
	bool			  removed;

	SignatureCheckProvider(provider);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "DELETE FROM prm.channel_credential c WHERE c.org_id = $1 AND c.provider = $2",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(provider);
	removed = PrmExecute(plan, values, NULL, false, 0) > 0;
	if (removed)
		PrmEmitEvent(org_id, "channel_credential_removed", "organization", org_id,
					 psprintf("{\"provider\": %s}", PrmJsonString(provider)));
	PrmSpiFinish();
	PG_RETURN_BOOL(removed);
}

/* Add one value of a parameter to out, within the bounds. */
static void
SignatureAddPair(SignatureParams *out, const JsonbValue *key, const JsonbValue *value)
{
	SignaturePair *pair;

	if (value->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parameter \"%.*s\" of params is not a string",
						key->val.string.len, key->val.string.val),
				 errdetail("Form parameters are strings: pass each value as the JSON string it arrived as (an array of strings for a repeated name)."),
				 errhint("A number or boolean would be signed in a form Twilio did not sign.")));
	if (out->npairs >= SIG_MAX_VALUES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("params has more than %d values", SIG_MAX_VALUES)));
	out->bytes += key->val.string.len + value->val.string.len;
	if (out->bytes > SIG_MAX_SIGNED_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("params is too large"),
				 errdetail("Its names and values hold more than %d bytes.", SIG_MAX_SIGNED_BYTES)));
	if (out->npairs == out->maxpairs)
	{
		out->maxpairs *= 2;
		out->pairs = repalloc(out->pairs, sizeof(SignaturePair) * out->maxpairs);
	}
	pair = &out->pairs[out->npairs++];
	pair->key = key->val.string.val;
	pair->keylen = key->val.string.len;
	pair->value = value->val.string.val;
	pair->valuelen = value->val.string.len;
}

/* Add the values of one parameter: a string, or an array of strings. */
static void
SignatureAddParam(SignatureParams *out, const JsonbValue *key, JsonbValue *value)
{
	JsonbIterator	  *it;
	JsonbValue		   elem;
	JsonbIteratorToken tok;

	if (value->type != jbvBinary)
	{
		SignatureAddPair(out, key, value);
		return;
	}
	if (!JsonContainerIsArray(value->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parameter \"%.*s\" of params is an object",
						key->val.string.len, key->val.string.val),
				 errdetail("params is one flat object of form parameters: a string, or an array of strings for a repeated name.")));
	it = JsonbIteratorInit(value->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
		if (tok == WJB_ELEM)
			SignatureAddPair(out, key, &elem);
}

/* Order of pairs: by name, then value, as bytes. */
static int
SignaturePairCmp(const void *a, const void *b)
{
	const SignaturePair *x = a;
	const SignaturePair *y = b;
	int					 c;

	c = memcmp(x->key, y->key, Min(x->keylen, y->keylen));
	if (c != 0 || x->keylen != y->keylen)
		return c != 0 ? c : (x->keylen < y->keylen ? -1 : 1);
	c = memcmp(x->value, y->value, Min(x->valuelen, y->valuelen));
	if (c != 0 || x->valuelen != y->valuelen)
		return c != 0 ? c : (x->valuelen < y->valuelen ? -1 : 1);
	return 0;
}

/*
 * The form parameters of params (one flat jsonb object: string values, or
 * arrays of strings for a repeated name), sorted by name and value, with a
 * value repeated under the same name kept once.  22023 for anything else.
 */
static void
SignatureCollect(Jsonb *params, SignatureParams *out)
{
	JsonbIterator	  *it;
	JsonbValue		   v;
	JsonbValue		   key = {0};
	JsonbIteratorToken tok;
	int				   i,
		n;

	if (!JB_ROOT_IS_OBJECT(params))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("params must be a JSON object"),
				 errdetail("Pass the request's form parameters as an object of name to value, '{}' for a GET request.")));
	out->maxpairs = 32;
	out->npairs = 0;
	out->bytes = 0;
	out->pairs = palloc(sizeof(SignaturePair) * out->maxpairs);
	it = JsonbIteratorInit(&params->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = v;
		else if (tok == WJB_VALUE)
			SignatureAddParam(out, &key, &v);
	}
	if (out->npairs > 1)
		qsort(out->pairs, out->npairs, sizeof(SignaturePair), SignaturePairCmp);
	for (i = 0, n = 0; i < out->npairs; i++)
		if (n == 0 || SignaturePairCmp(&out->pairs[n - 1], &out->pairs[i]) != 0)
			out->pairs[n++] = out->pairs[i];
	out->npairs = n;
}

/* The string Twilio signs: the URL, then each name and value, in order. */
static char *
SignatureBuildString(const char *url, SignatureParams *params)
{
	StringInfoData buf;
	int			   i;

	initStringInfo(&buf);
	appendStringInfoString(&buf, url);
	for (i = 0; i < params->npairs; i++)
	{
		appendBinaryStringInfo(&buf, params->pairs[i].key, params->pairs[i].keylen);
		appendBinaryStringInfo(&buf, params->pairs[i].value, params->pairs[i].valuelen);
	}
	return buf.data;
}

/*
 * The organization owning the number in params' "To" (Twilio's: the
 * clinic's number; "whatsapp:+1..." for WhatsApp, routed by whatsapp_number),
 * checked for the webhook level (42501).  A number no organization owns is
 * P0002, as for handle_inbound_sms (clinic numbers are public).  Inside SPI.
 */
static int64
SignatureRouteOrg(Jsonb *params)
{
	static SPIPlanPtr sms_plan = NULL;
	static SPIPlanPtr whatsapp_plan = NULL;
	JsonbValue		  to;
	char			 *to_raw;
	const char		 *number;
	char			 *normalized;
	bool			  whatsapp;
	bool			  isnull;
	int64			  org_id = 0;
	Datum			  values[1];

	if (getKeyJsonValueFromContainer(&params->root, "To", 2, &to) == NULL ||
		to.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("params has no \"To\" string to find the organization by"),
				 errhint("Pass org_id: prm.verify_twilio_signature(url, params, signature, org_id => ...).")));
	to_raw = pnstrdup(to.val.string.val, to.val.string.len);
	PrmCheckTextLength(to_raw, "To", 64);
	whatsapp = pg_strncasecmp(to_raw, SIG_TWILIO_PREFIX_WHATSAPP,
							  strlen(SIG_TWILIO_PREFIX_WHATSAPP)) == 0;
	number = whatsapp ? to_raw + strlen(SIG_TWILIO_PREFIX_WHATSAPP) : to_raw;
	normalized = PrmTryNormalizePhone(number, NULL);

	PrmPrepare(&sms_plan, "SELECT o.id FROM prm.organization o WHERE o.sms_number = $1",
			   1, (Oid[]){TEXTOID});
	PrmPrepare(&whatsapp_plan,
			   "SELECT o.id FROM prm.organization o WHERE o.whatsapp_number = $1",
			   1, (Oid[]){TEXTOID});
	if (normalized != NULL)
	{
		values[0] = CStringGetTextDatum(normalized);
		if (PrmExecute(whatsapp ? whatsapp_plan : sms_plan, values, NULL, true, 1) == 1)
			org_id = PrmGetInt64(0, 1, &isnull);
	}
	if (org_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no organization has the %s number %s",
						whatsapp ? "WhatsApp" : "SMS", normalized ? normalized : to_raw),
				 errdetail("\"To\" is the clinic's own number, as Twilio sends it (\"whatsapp:+1...\" for WhatsApp).")));
	if (!PrmHasOrgAccess(org_id, PRM_LEVEL_WEBHOOK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for %s number %s",
						whatsapp ? "WhatsApp" : "SMS", normalized),
				 errhint("The webhook role needs the webhook level on the organization owning the number.")));
	return org_id;
}

/*
 * The organization's Twilio auth token, palloc'd in the context of SPI's
 * caller, so it outlives SPI_finish (wipe it after use); 55000 when none is
 * stored.  Inside SPI, after the access check.
 */
static char *
SignatureReadToken(int64 org_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	char			 *token;
	char			 *copy;

	PrmPrepare(&plan,
			   "SELECT c.auth_token FROM prm.channel_credential c"
			   " WHERE c.org_id = $1 AND c.provider = 'twilio'",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("organization %lld has no Twilio auth token", (long long) org_id),
				 errdetail("Without it no request can be verified: every one would be refused."),
				 errhint("An administrator of the organization stores it with prm.set_channel_credential(org_id, 'twilio', auth_token).")));
	token = PrmGetText(0, 1);
	copy = SPI_palloc(strlen(token) + 1);
	strcpy(copy, token);
	explicit_bzero(token, strlen(token));
	return copy;
}

/*
 * The base64 HMAC-SHA1 of data under token, into out (at least 29 bytes),
 * computed by PostgreSQL's own HMAC (OpenSSL's when the server was built
 * with it).
 */
static void
SignatureCompute(const char *token, const char *data, Size len, char *out)
{
#if PG_VERSION_NUM >= 140000
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA1);
	uint8		 digest[SHA1_DIGEST_LENGTH];
	int			 n;

	if (ctx == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (pg_hmac_init(ctx, (const uint8 *) token, strlen(token)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_hmac_final(ctx, digest, sizeof(digest)) < 0)
	{
#if PG_VERSION_NUM >= 150000
		const char *reason = pstrdup(pg_hmac_error(ctx));
#else
		const char *reason = "unknown error";
#endif

		pg_hmac_free(ctx);
		elog(ERROR, "could not compute HMAC-SHA1: %s", reason);
	}
	pg_hmac_free(ctx);
#if PG_VERSION_NUM >= 180000
	n = pg_b64_encode(digest, sizeof(digest), out, pg_b64_enc_len(sizeof(digest)));
#else
	n = pg_b64_encode((const char *) digest, sizeof(digest), out,
					  pg_b64_enc_len(sizeof(digest)));
#endif
	if (n < 0)
		elog(ERROR, "could not encode the signature in base64");
	out[n] = '\0';
#else
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("webhook signatures need PostgreSQL 14 or later"),
			 errdetail("PostgreSQL 13 has no HMAC of its own (common/hmac.h).")));
#endif
}

/*
 * Are the two signatures equal?  Every byte is compared, whatever differs
 * first, so the time taken tells an attacker nothing about how much of a
 * forged signature was right.  The length is public and compared first.
 */
static bool
SignatureEqual(const char *expected, int expected_len, const char *given,
			   int given_len)
{
	volatile unsigned char diff = 0;
	int					   i;

	if (expected_len != given_len)
		return false;
	for (i = 0; i < expected_len; i++)
		diff |= (unsigned char) expected[i] ^ (unsigned char) given[i];
	return diff == 0;
}

/*
 * prm.verify_twilio_signature(url text, params jsonb, signature text,
 *							   org_id bigint DEFAULT NULL) RETURNS boolean
 *	  Is signature (the X-Twilio-Signature header) Twilio's for this request,
 *	  under the auth token of org_id, or of the organization owning
 *	  params->>'To'?  A NULL signature (no header) is false.
 */
Datum
prm_verify_twilio_signature(PG_FUNCTION_ARGS)
{
	char		   *url = PrmTextArg(fcinfo, 0, "url", SIG_MAX_URL_LEN);
	Jsonb		   *params;
	SignatureParams collected;
	char		   *data;
	char		   *token;
	char			expected[32];
	text		   *given;
	bool			valid;
	int64			org_id;

	PrmArgNotNull(fcinfo, 1, "params");
	params = PG_GETARG_JSONB_P(1);
	if (pg_strncasecmp(url, "https://", 8) != 0 && pg_strncasecmp(url, "http://", 7) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("url must be an http or https URL"),
				 errdetail("It is the full URL Twilio requested, as configured in Twilio, query string included.")));
	SignatureCollect(params, &collected);
	data = SignatureBuildString(url, &collected);

	PrmSpiConnect();
	if (PG_ARGISNULL(3))
		org_id = SignatureRouteOrg(params);
	else
	{
		org_id = PG_GETARG_INT64(3);
		PrmRequireOrgAccess(org_id, PRM_LEVEL_WEBHOOK);
	}
	token = SignatureReadToken(org_id);
	PrmSpiFinish();

	if (PG_ARGISNULL(2))
		valid = false;
	else
	{
		SignatureCompute(token, data, strlen(data), expected);
		given = PG_GETARG_TEXT_PP(2);
		valid = SignatureEqual(expected, strlen(expected), VARDATA_ANY(given),
							   VARSIZE_ANY_EXHDR(given));
		explicit_bzero(expected, sizeof(expected));
	}
	explicit_bzero(token, strlen(token));
	PG_RETURN_BOOL(valid);
}
