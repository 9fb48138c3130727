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
 * Then the national numbering plans prm knows beyond lengths are checked,
 * by country calling code and whichever way the number was written: North
 * America (+1: area and exchange codes start 2-9, no N11 area code), the
 * UK (+44), Germany (+49) and Australia (+61) -- see phone_plans.  The error
 * names the rule that failed and, for a national number, the region it was
 * read with: "0412 345 678" in a US organization is an impossible +1 041
 * number, not an Australian mobile.  Other numbers are checked by the
 * E.164 length (8 to 15 digits) and their region's national length.
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
 * North American Numbering Plan (+1): NXX NXX XXXX, ten digits after the
 * country code; N is 2-9 in the area code and in the exchange code, and an
 * area code of the form N11 is a service code (211, 911...), not an area.
 * nsn: the digits after the country code.  NULL when the rules hold, else
 * the rule broken.
 */
static const char *
PhoneRuleNanp(const char *nsn, int len)
{
	if (len != 10)
		return "A North American (+1) number has 10 digits after the country code (NANP: NXX NXX XXXX).";
	if (nsn[0] == '0' || nsn[0] == '1')
		return "A North American area code cannot start with 0 or 1 (NANP: NXX NXX XXXX, N is 2-9).";
	if (nsn[1] == '1' && nsn[2] == '1')
		return "A North American area code cannot end in 11: N11 codes (211, 911...) are service codes (NANP).";
	if (nsn[3] == '0' || nsn[3] == '1')
		return "A North American exchange code (the 3 digits after the area code) cannot start with 0 or 1 (NANP: NXX NXX XXXX, N is 2-9).";
	return NULL;
}

/*
 * United Kingdom (+44), Ofcom's National Telephone Numbering Plan: the
 * national significant number does not start with 0; 04 and 06 are not
 * allocated; numbers starting 2 (geographic), 3 (non-geographic), 5, 7
 * (mobile) and 9 have 10 digits; numbers starting 1 (geographic) and 8 have
 * 9 or 10.
 */
static const char *
PhoneRuleGb(const char *nsn, int len)
{
	switch (nsn[0])
	{
		case '0':
			return "A UK (+44) number does not start with 0 after the country code (Ofcom numbering plan).";
		case '4':
		case '6':
			return "UK (+44) numbers starting 04 and 06 are not allocated (Ofcom numbering plan).";
		case '1':
		case '8':
			if (len < 9 || len > 10)
				return "A UK (+44) number starting 01 or 08 has 9 or 10 digits after the trunk prefix 0 (Ofcom numbering plan).";
			return NULL;
		default:
			if (len != 10)
				return "A UK (+44) number starting 02, 03, 05, 07 (mobile) or 09 has 10 digits after the trunk prefix 0 (Ofcom numbering plan).";
			return NULL;
	}
}

/*
 * Germany (+49), Bundesnetzagentur's plan: the national significant number
 * does not start with 0; mobile numbers (015x, 016x, 017x) have 10 or 11
 * digits after the trunk prefix 0.  Geographic numbers vary in length (area
 * codes of 2 to 5 digits): only the region's length bounds apply to them.
 */
static const char *
PhoneRuleDe(const char *nsn, int len)
{
	if (nsn[0] == '0')
		return "A German (+49) number does not start with 0 after the country code (Bundesnetzagentur numbering plan).";
	if (nsn[0] == '1' && (nsn[1] == '5' || nsn[1] == '6' || nsn[1] == '7') &&
		(len < 10 || len > 11))
		return "A German mobile number (015x, 016x, 017x) has 10 or 11 digits after the trunk prefix 0 (Bundesnetzagentur numbering plan).";
	return NULL;
}

/*
 * Australia (+61), ACMA's Telecommunications Numbering Plan: 9 digits after
 * the country code, starting 2, 3, 7 or 8 (geographic: 02, 03, 07, 08), 4
 * (mobile: 04) or 5 (location independent: 05).  1300, 1800 and 13 numbers
 * are not reachable from abroad, so not E.164 numbers of a patient.
 */
static const char *
PhoneRuleAu(const char *nsn, int len)
{
	if (len != 9)
		return "An Australian (+61) number has 9 digits after the country code (ACMA numbering plan).";
	if (strchr("234578", nsn[0]) == NULL)
		return "An Australian (+61) number starts 02, 03, 07 or 08 (geographic), 04 (mobile) or 05 after the country code (ACMA numbering plan); 1300, 1800 and 13 numbers cannot be dialled from abroad.";
	return NULL;
}

/* The national plans prm checks beyond lengths, by country calling code. */
static const struct
{
	const char *calling_code;
	const char *(*rule) (const char *nsn, int len);
}			phone_plans[] = {
	{"1", PhoneRuleNanp},
	{"44", PhoneRuleGb},
	{"49", PhoneRuleDe},
	{"61", PhoneRuleAu},
};

/*
 * Check e164 against the national numbering plan of its country calling
 * code (calling codes are prefix-free, so the first match is the plan).
 * False (with the error raised, naming the rule) when it breaks one.
 * region: the region a national number was read with (NULL: international
 * input), named in the detail so that "0412 345 678" read as a US number
 * says why.
 */
static bool
PhoneCheckNumbering(const char *input, const char *e164, const char *region)
{
	int i;

	for (i = 0; i < (int) lengthof(phone_plans); i++)
	{
		int			cc_len = strlen(phone_plans[i].calling_code);
		const char *broken;

		if (strncmp(e164 + 1, phone_plans[i].calling_code, cc_len) != 0)
			continue;
		broken = phone_plans[i].rule(e164 + 1 + cc_len, strlen(e164) - 1 - cc_len);
		if (broken == NULL)
			return true;
		PhoneInvalid(input, region == NULL ? broken
					 : psprintf("%s It was read as a national number of region %s, the organization's phone_region (or prm.default_region).",
								broken, region));
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
		return PhoneCheckNumbering(input, out.data, NULL) ? out.data : NULL;
	}
	else
	{
		const PhoneRegion *r = PhoneLookupRegion(region ? region : prm_default_region);

		nsn = digits;
		nsn_len = ndigits;
		if (r->trunk != 0 && nsn_len > 1 && nsn[0] == r->trunk)
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
		return PhoneCheckNumbering(input, out.data, r->region) ? out.data : NULL;
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
