/*-------------------------------------------------------------------------
 *
 * phone.c
 *	  Phone numbers to E.164.
 *
 * Every phone number prm stores is in E.164 form: '+', a country calling
 * code and the national significant number, 8 to 15 digits in all.  Input is
 * read the way people write numbers:
 *	- "+61 412 345 678", "(+44) 20 7946 0958": international, taken as is;
 *	- "0061 412 345 678", "011 1 212 555 0100": international prefix 00, or
 *	  011 in the North American plan, then as above;
 *	- "0412 345 678", "(212) 555-0100": national, read with the region of the
 *	  organization (setting phone_region) or prm.default_region: the trunk
 *	  prefix is dropped and the region's calling code put in front.
 * Spaces, dots, dashes, slashes and parentheses are ignored; anything else
 * (letters, a second '+') makes the number invalid, as do too few or too many
 * digits.  The region table holds the trunk prefix and the length of
 * national numbers for the regions prm's clinics work in; a region missing
 * from it is an error, never a guess.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_normalize_phone);

typedef struct PhoneRegion
{
	const char *region; /* ISO 3166 alpha-2 */
	const char *calling_code;
	char		trunk;	 /* trunk prefix digit, or 0 when none */
	int			min_len; /* national significant number length */
	int			max_len;
} PhoneRegion;

static const PhoneRegion phone_regions[] = {
	{"US", "1", '1', 10, 10},
	{"CA", "1", '1', 10, 10},
	{"GB", "44", '0', 9, 10},
	{"IE", "353", '0', 7, 9},
	{"AU", "61", '0', 9, 9},
	{"NZ", "64", '0', 8, 10},
	{"DE", "49", '0', 6, 13},
	{"AT", "43", '0', 4, 13},
	{"CH", "41", '0', 9, 9},
	{"FR", "33", '0', 9, 9},
	{"NL", "31", '0', 9, 9},
	{"BE", "32", '0', 8, 9},
	{"ES", "34", 0, 9, 9},
	{"IT", "39", 0, 6, 11},
	{"SE", "46", '0', 7, 9},
	{"DK", "45", 0, 8, 8},
	{"NO", "47", 0, 8, 8},
	{"ZA", "27", '0', 9, 9},
	{"SG", "65", 0, 8, 8},
	{"IN", "91", '0', 10, 10},
};

static const PhoneRegion *PhoneLookupRegion(const char *region);
static void				  PhoneInvalid(const char *input, const char *detail);

/* set while PrmTryNormalizePhone runs: report instead of raising */
static bool phone_soft = false;
static bool phone_failed = false;

/* The region table entry for an ISO code, case-insensitively; raise if none. */
static const PhoneRegion *
PhoneLookupRegion(const char *region)
{
	int i;
	int len = strlen(region);

	for (i = 0; i < (int) lengthof(phone_regions); i++)
		if (pg_strcasecmp(phone_regions[i].region, region) == 0)
			return &phone_regions[i];
	/* never echo an oversized argument whole: 20 characters, then "..." */
	if (len > 20 && pg_mbstrlen_with_len(region, len) > 20)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("phone region \"%s...\" is not supported",
						pnstrdup(region, pg_mbcharcliplen(region, len, 20))),
				 errdetail("A region is an ISO 3166 alpha-2 code; this one has %d bytes.", len),
				 errhint("Supported regions: US, CA, GB, IE, AU, NZ, DE, AT, CH, FR, NL, BE, ES, IT, SE, DK, NO, ZA, SG, IN.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("phone region \"%s\" is not supported", region),
			 errhint("Supported regions: US, CA, GB, IE, AU, NZ, DE, AT, CH, FR, NL, BE, ES, IT, SE, DK, NO, ZA, SG, IN.")));
	return NULL; /* keep compiler quiet */
}

/* Raise 22023 for an unreadable phone number. */
static void
PhoneInvalid(const char *input, const char *detail)
{
	if (phone_soft)
	{
		phone_failed = true;
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("phone number \"%s\" is not valid", input),
			 errdetail("%s", detail),
			 errhint("Write the number in international form, such as \"+61 412 345 678\", or as a national number of the organization's region.")));
}

/*
 * The national numbering rules prm knows beyond lengths: a North American
 * (+1) number has ten digits after the country code and its area code
 * cannot start with 0 or 1.  False (with the error raised) when e164
 * breaks them.
 */
static bool
PhoneCheckNumbering(const char *input, const char *e164)
{
	if (strncmp(e164, "+1", 2) != 0)
		return true;
	if (strlen(e164) != 12)
	{
		PhoneInvalid(input, "A North American (+1) number has 10 digits after the country code (NANP).");
		return false;
	}
	if (e164[2] == '0' || e164[2] == '1')
	{
		PhoneInvalid(input, "A North American area code cannot start with 0 or 1 (NANP); is it a number of another region?");
		return false;
	}
	return true;
}

/*
 * Normalise input to E.164, reading national numbers with region (NULL for
 * prm.default_region).  Returns a palloc'd string.
 */
char *
PrmNormalizePhone(const char *input, const char *region)
{
	char		   digits[64];
	int			   ndigits = 0;
	bool		   plus = false;
	const char	  *p;
	const char	  *nsn;
	int			   nsn_len;
	StringInfoData out;

	if (strlen(input) > 40)
	{
		PhoneInvalid("(too long)", "A phone number has at most 15 digits.");
		return NULL;
	}

	for (p = input; *p; p++)
	{
		/* "+44 (0)20 ...": the bracketed trunk prefix is not dialled */
		if (plus && strncmp(p, "(0)", 3) == 0)
		{
			p += 2;
			continue;
		}
		if (isdigit((unsigned char) *p))
			digits[ndigits++] = *p;
		else if (*p == '+')
		{
			if (plus || ndigits > 0)
			{
				PhoneInvalid(input, "A '+' may only start the number.");
				return NULL;
			}
			plus = true;
		}
		else if (!(*p == ' ' || *p == '-' || *p == '.' || *p == '(' ||
				   *p == ')' || *p == '/' || *p == '\t'))
		{
			PhoneInvalid(input, "Only digits, spaces, '+', '-', '.', '/' and parentheses are allowed.");
			return NULL;
		}
	}
	digits[ndigits] = '\0';
	Assert(ndigits < (int) sizeof(digits));

	if (ndigits == 0)
	{
		PhoneInvalid(input, "It has no digits.");
		return NULL;
	}

	initStringInfo(&out);
	appendStringInfoChar(&out, '+');

	if (!plus && ndigits > 2 && digits[0] == '0' && digits[1] == '0')
	{
		plus = true; /* 00: international prefix */
		memmove(digits, digits + 2, ndigits - 1);
		ndigits -= 2;
	}
	else if (!plus && ndigits > 3 && strncmp(digits, "011", 3) == 0 &&
			 PhoneLookupRegion(region ? region : prm_default_region)->calling_code[0] == '1' &&
			 PhoneLookupRegion(region ? region : prm_default_region)->calling_code[1] == '\0')
	{
		plus = true; /* 011: NANP international prefix */
		memmove(digits, digits + 3, ndigits - 2);
		ndigits -= 3;
	}

	if (plus)
	{
		if (digits[0] == '0')
		{
			PhoneInvalid(input, "A country calling code never starts with 0.");
			return NULL;
		}
		if (ndigits < 8 || ndigits > 15)
		{
			PhoneInvalid(input, "An international number has 8 to 15 digits.");
			return NULL;
		}
		appendStringInfoString(&out, digits);
		return PhoneCheckNumbering(input, out.data) ? out.data : NULL;
	}
	else
	{
		const PhoneRegion *r = PhoneLookupRegion(region ? region : prm_default_region);

		nsn = digits;
		nsn_len = ndigits;
		if (r->trunk != 0 && nsn_len > r->min_len && nsn[0] == r->trunk)
		{
			nsn++;
			nsn_len--;
		}
		if (nsn_len < r->min_len || nsn_len > r->max_len)
		{
			char *detail = (r->min_len == r->max_len) ? psprintf("A national number of region %s has %d digits after the trunk prefix.",
																 r->region, r->min_len)
													  : psprintf("A national number of region %s has %d to %d digits after the trunk prefix.",
																 r->region, r->min_len, r->max_len);

			{
				PhoneInvalid(input, detail);
				return NULL;
			}
		}
		appendStringInfoString(&out, r->calling_code);
		appendStringInfoString(&out, nsn);
		if (out.len - 1 > 15)
		{
			PhoneInvalid(input, "An E.164 number has at most 15 digits.");
			return NULL;
		}
		return PhoneCheckNumbering(input, out.data) ? out.data : NULL;
	}
}

/*
 * Normalise input like PrmNormalizePhone, but return NULL instead of raising
 * when the number cannot be read (an unknown region still raises).
 */
char *
PrmTryNormalizePhone(const char *input, const char *region)
{
	char *result;

	(void) PhoneLookupRegion(region ? region : prm_default_region);
	phone_soft = true;
	phone_failed = false;
	PG_TRY();
	{
		result = PrmNormalizePhone(input, region);
	}
	PG_FINALLY();
	{
		phone_soft = false;
	}
	PG_END_TRY();
	return phone_failed ? NULL : result;
}

/* Raise unless region is in the region table. */
void
PrmCheckPhoneRegion(const char *region)
{
	(void) PhoneLookupRegion(region);
}

/* The phone region of an organization: its setting, else the default. */
char *
PrmOrgPhoneRegion(int64 org_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	char			 *region;

	PrmPrepare(&plan,
			   "SELECT o.settings ->> 'phone_region' FROM prm.organization o"
			   " WHERE o.id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	if (PrmExecute(plan, values, NULL, true, 1) == 1 &&
		(region = PrmGetText(0, 1)) != NULL)
		return region;
	return prm_default_region;
}

/*
 * prm.normalize_phone(phone text, region text DEFAULT NULL) RETURNS text
 *	  The E.164 form of phone, or an error saying why it cannot be read.
 */
Datum
prm_normalize_phone(PG_FUNCTION_ARGS)
{
	char *phone;
	char *region = NULL;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	phone = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		region = text_to_cstring(PG_GETARG_TEXT_PP(1));
	PG_RETURN_TEXT_P(cstring_to_text(PrmNormalizePhone(phone, region)));
}
