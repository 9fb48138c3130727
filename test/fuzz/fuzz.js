// prm's typed fuzzer (make fuzz): calls every function of schema prm, read
// from pg_proc with its argument types, many times with typed random and
// hostile arguments, as the superuser, as a role with staff level on
// organization 1 and as a role with no grant; attaches every trigger
// function to temp tables of the wrong shape; runs sqlsmith as the staff
// role; then checks the booking and outbox invariants and prints a report.
//
// Connection: the usual PG* environment variables (PGHOST, PGPORT, PGUSER,
// PGPASSWORD), database FUZZ_DB.  The fixture (fixture.sql) must be loaded.
// Exit status: 0 clean; 1 on a crash, an internal error, a statement that
// ignored its statement_timeout, a tenancy breach or a broken invariant;
// 2 on a setup failure.
'use strict';

const { Client } = require('pg');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const env = process.env;
const DB = env.FUZZ_DB || 'prm_fuzz';
const TOTAL = Number(env.FUZZ_SECONDS || 240);
const SQLSMITH_SECONDS = Number(env.FUZZ_SQLSMITH_SECONDS || Math.round(TOTAL / 3));
const CALL_SECONDS = Number(env.FUZZ_CALL_SECONDS || Math.max(10, TOTAL - SQLSMITH_SECONDS - 20));
const TIMEOUT_MS = Number(env.FUZZ_STATEMENT_TIMEOUT_MS || 2000);
const SEED = Number(env.FUZZ_SEED || (Date.now() % 1000000));
const SQLSMITH_QUERIES = Number(env.FUZZ_SQLSMITH_QUERIES || 1000000);
const SERVER_LOG = env.FUZZ_SERVER_LOG || '';
const OUT = env.FUZZ_OUT || '';
const SRC = env.FUZZ_SRC_DIR || path.join(__dirname, '..', '..', 'src');
const STAFF = 'fuzz_staff';
const NOGRANT = 'fuzz_nogrant';
const MB = 1048576;
const MAX_CRASHES_PER_FUNCTION = 3;   // then the function is skipped: each crash costs a recovery
const BIG_MESSAGE = 2000;            // an error message longer than this echoes an argument whole

// ---------------------------------------------------------------- random
let rngState = SEED >>> 0 || 1;
function rnd() { // mulberry32
  rngState = (rngState + 0x6D2B79F5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const chance = (p) => rnd() < p;
const pick = (a) => a[Math.floor(rnd() * a.length)];
const randInt = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const q = (s) => "'" + String(s).replace(/'/g, "''") + "'";

// ---------------------------------------------------------------- report
const R = {
  seed: SEED, calls: 0, ok: 0, byPrincipal: {}, classes: {}, codes: {},
  timeouts: 0, hangs: [], internal: new Map(), crashes: [], functions: {},
  triggerAttacks: { statements: 0, ok: 0, classes: {}, codes: {}, byPrincipal: {}, crossTenant: [], succeeded: [] },
  oversized: new Map(), skipped: [], tenancy: new Map(),
  sqlsmith: null, invariants: [], logCrashes: [], logInternal: [],
};
const INTERNAL_RE = /cache lookup failed|unrecognized node|invalid memory alloc|SPI_\w+ failed|unexpected SPI|could not find (tuple|trigger|function|block)|null pointer|wrong number of|should not happen|unexpected end of|corrupt|bogus|tuple concurrently|unsupported (type|node)|no such (type|column) in tupdesc|invalid (typlen|attnum)/i;

function isInternal(err) {
  if (!err || !err.code) return false;
  return /^(XX|58)/.test(err.code) || INTERNAL_RE.test(err.message || '');
}
function isConnLoss(err) {
  if (!err) return false;
  if (err.code && /^57P0[123]$/.test(err.code)) return true;
  return !err.code && /terminated|ECONNRESET|EPIPE|ECONNREFUSED|not queryable|closed|ended|crash/i.test(err.message || '');
}

// ---------------------------------------------------------------- connections
function newClient(extraOptions) {
  return new Client({
    database: DB,
    application_name: 'prm_fuzz',
    // keep the server log small: no ERROR lines, no statements, from us
    options: '-c log_min_messages=fatal -c log_min_error_statement=panic ' + (extraOptions || ''),
  });
}
let db = null;      // the fuzzing connection (superuser, SET LOCAL ROLE per call)
let ctl = null;     // control connection: cancels and terminates hung calls
async function connectRetry(seconds) {
  const until = Date.now() + seconds * 1000;
  for (;;) {
    const c = newClient();
    c.on('error', () => {});
    try { await c.connect(); await c.query('SELECT 1'); return c; } catch (e) {
      try { await c.end(); } catch (_) {}
      if (Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
async function reconnect() {
  for (const c of [db, ctl]) if (c) { try { await c.end(); } catch (_) {} }
  db = await connectRetry(120);
  ctl = await connectRetry(120);
}

// ---------------------------------------------------------------- fixture data
const F = { orgs: [], org1: null, org2: null, ids: {}, phones: {}, smsNumbers: [], tokens: [], leases: [],
  pmids: [], settingsKeys: [], words: [], tables: [] };

async function loadFixture() {
  const orgs = (await db.query("SELECT id, sms_number FROM prm.organization WHERE name LIKE 'Fuzz Clinic%' ORDER BY id")).rows;
  if (orgs.length < 2) throw new Error('fixture not loaded (no organizations "Fuzz Clinic ...")');
  F.org1 = String(orgs[0].id); F.org2 = String(orgs[1].id);
  F.orgs = [F.org1, F.org2];
  F.smsNumbers = orgs.map((o) => o.sms_number);
  F.tables = (await db.query(`SELECT c.relname FROM pg_class c
      WHERE c.relnamespace = 'prm'::regnamespace AND c.relkind IN ('r', 'p')
        AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'org_id')
        AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'id')`)).rows.map((r) => r.relname);
  for (const t of F.tables) {
    const rows = (await db.query(`SELECT org_id::text, id::text FROM prm.${t} WHERE org_id = ANY ($1::bigint[]) ORDER BY id LIMIT 400`, [F.orgs])).rows;
    F.ids[t] = { [F.org1]: [], [F.org2]: [] };
    for (const r of rows) F.ids[t][r.org_id].push(r.id);
  }
  F.ids.organization = { [F.org1]: [F.org1], [F.org2]: [F.org2] };
  for (const o of F.orgs) {
    F.phones[o] = (await db.query('SELECT phone FROM prm.patient WHERE org_id = $1 AND phone IS NOT NULL ORDER BY id', [o])).rows.map((r) => r.phone);
  }
  // prm keeps only the hash of an accept token; the token itself is in the
  // offer's SMS when the organization has an accept_url
  F.tokens = (await db.query(`SELECT substring(m.body from '([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})') AS token
                                FROM prm.outbound_message m WHERE m.offer_id IS NOT NULL ORDER BY m.id`)).rows
    .map((r) => r.token).filter((t) => t);
  if (F.tokens.length === 0) F.tokens = ['00000000-0000-4000-8000-000000000000'];
  F.leases = (await db.query("SELECT lease_token::text FROM prm.outbound_message WHERE lease_token IS NOT NULL")).rows.map((r) => r.lease_token);
  F.pmids = (await db.query("SELECT provider_message_id FROM prm.outbound_message WHERE provider_message_id IS NOT NULL")).rows.map((r) => r.provider_message_id);
  // rows that tie several ids together, so that calls taking two ids can name a matching pair
  const linkQueries = [
    'SELECT org_id, request_id, therapist_id FROM prm.placement_contact',
    'SELECT org_id, id AS message_id, lease_token::text AS lease_token, provider_message_id FROM prm.outbound_message WHERE lease_token IS NOT NULL OR provider_message_id IS NOT NULL',
    'SELECT org_id, id AS call_task_id, request_id, therapist_id FROM prm.call_task',
    'SELECT org_id, id AS offer_id, slot_id, patient_id, waitlist_entry_id FROM prm.offer',
    'SELECT org_id, id AS appointment_id, patient_id, provider_id FROM prm.appointment',
    'SELECT org_id, id AS waitlist_entry_id, patient_id, provider_id FROM prm.waitlist_entry',
    'SELECT org_id, id AS request_id, patient_id FROM prm.placement_request',
  ];
  F.links = { [F.org1]: [], [F.org2]: [] };
  for (const lq of linkQueries) {
    try {
      for (const r of (await db.query(lq + ' WHERE org_id = ANY ($1::bigint[]) LIMIT 200', [F.orgs])).rows) {
        const o = String(r.org_id); delete r.org_id;
        for (const k of Object.keys(r)) r[k] = r[k] === null ? null : String(r[k]);
        F.links[o].push(r);
      }
    } catch (_) { /* a table of another version: no links from it */ }
  }
  F.settingsKeys = Object.keys((await db.query('SELECT prm.settings($1) AS s', [F.org1])).rows[0].s || {});
  // a dictionary, as AFL's: every short lower-case string literal of the C sources
  const words = new Set(['sms', 'email', 'voice', 'whatsapp', 'push']);
  try {
    for (const f of fs.readdirSync(SRC)) {
      if (!/\.c$/.test(f)) continue;
      const s = fs.readFileSync(path.join(SRC, f), 'utf8');
      for (const m of s.matchAll(/"([a-z][a-z0-9_-]{1,30})"/g)) words.add(m[1]);
    }
  } catch (_) { /* no sources: the built-in words only */ }
  F.words = [...words];
}

// resolve the table an *_id argument refers to
const ID_ALIASES = { message_id: 'outbound_message', request_id: 'placement_request', instance_id: 'journey_instance',
  occurrence_id: 'reminder_occurrence', entry_id: 'waitlist_entry', waitlist_entry_id: 'waitlist_entry',
  call_task_id: 'call_task', batch_id: 'contact_batch', contact_id: 'placement_contact', assignee_id: 'staff' };
function idTable(argName) {
  if (ID_ALIASES[argName] && F.ids[ID_ALIASES[argName]]) return ID_ALIASES[argName];
  const stem = argName.replace(/_id$/, '');
  if (F.ids[stem]) return stem;
  const t = F.tables.find((x) => x.endsWith(stem) || x.startsWith(stem));
  return t || null;
}
function idOf(table, org) {
  const a = table && F.ids[table] && F.ids[table][org];
  return a && a.length ? pick(a) : null;
}

// ---------------------------------------------------------------- hostile values (SQL expressions)
const TEXT_EDGE = [
  'NULL', "''", "' '", `repeat('x', ${MB})`, `repeat('€', ${Math.floor(MB / 3)})`, "repeat('a', 201)", "repeat('a', 501)",
  "repeat('a', 1601)", "repeat('a', 2001)", "repeat('9', 41)",
  q("'); DROP TABLE prm.patient; --"), q("' OR '1'='1"), q('$$; SELECT pg_sleep(10); $$'), q('%s%s%s%s%n%x%p'),
  q('%1$s %999999999$s'), q('{clinic}{date}{time}{link}{hold_minutes}{patient}{{}}{'), q('Zoë ﷽ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👩‍⚕️ 中文'),
  "E'\\u202Eevil\\u200b'", "E'e\\u0301\\u0301\\u0301'", "E'\\x01\\x1b[31m\\r\\n\\t'", q('\\x00\\\\\''), q('NULL'),
  q('-1'), q('0'), q('null'), q('true'), q('{}'), q('[]'), q('"'), q('\\'),
];
const PHONE_BAD = ['+', '++61412345678', '0', '00', '011', '+0 412 345 678', '+1234567', '+1234567890123456',
  '0412 345 678 ext 9', '٠٤١٢٣٤٥٦٧٨', '(((((', '+44 (0)(0)(0)20 7946 0958', '0'.repeat(40), '1'.repeat(41),
  '＋６１ ４１２ ３４５ ６７８', ' +61412345678 ', '-', '.', 'tel:+61412345678', '+61 412 345 678+', '0011 61 412',
  '011 1 212 555 0100', '+44 (0)20 7946 0958', '(212) 555-0100', '0412 345 678', '+49 (0) 30 1234567'].map(q);
const INT_EDGE = ['NULL', '0', '1', '-1', '2147483647', '-2147483648', '40', '41', '1000', '1001', '10000', '10001', '7'];
const BIGINT_EDGE = ['NULL', '0', '-1', '1', '9223372036854775807', '-9223372036854775808', '987654321', '2147483648'];
const FLOAT_EDGE = ['NULL', '0', "'-0'", "'NaN'", "'Infinity'", "'-Infinity'", '1e308', '-1e308', '5e-324', '90',
  '-90', '90.0000001', '180', '181', '-181', '1e15', '-1'];
const NUMERIC_EDGE = ['NULL', '0', '-1', "'NaN'", "'Infinity'", "'-Infinity'", "('1' || repeat('0', 1000))",
  "('0.' || repeat('0', 1000) || '1')", '99999999999.99', '9999999999999.999'];
const TS_EDGE = ['NULL', 'now()', "'infinity'", "'-infinity'", "'4714-11-24 00:00:00+00 BC'", "'294276-12-31 23:59:59.999999+00'",
  "'1970-01-01 00:00+00'", "'2000-01-01'", "now() + interval '1 hour'", "now() - interval '1 year'",
  "'2031-03-30 02:30 Europe/Berlin'", "'2031-10-26 02:30 Europe/Berlin'", "now() + interval '100 years'",
  "'2038-01-19 03:14:08+00'", "now() + interval '5 minutes'"];
const INTERVAL_EDGE = ['NULL', "'0'", "'1 microsecond'", "'1 second'", "'-1 second'", "'1 month'", "'-1000000 years'",
  "'178000000 years'", "'-178000000 years'", "'2147483647 days'", "'-2147483648 days'", "'2147483647 months'",
  "'2562047788 hours'", "'7 minutes'", "'1 hour'", "'3601 seconds'", "'30 days'", "'1 day -25 hours'",
  "'178956970 years 7 months 2147483647 days 2562047788:00:54.775807'"];
const BOOL_EDGE = ['NULL', 'true', 'false'];
const UUID_EDGE = ['NULL', "'00000000-0000-0000-0000-000000000000'", 'gen_random_uuid()', "'ffffffff-ffff-ffff-ffff-ffffffffffff'"];
const DATE_EDGE = ['NULL', "'infinity'", "'-infinity'", "'4714-11-24 BC'", "'5874897-12-31'", 'current_date', "'2031-02-29'::text"];
const TIME_EDGE = ['NULL', "'00:00'", "'23:59:59.999999'", "'24:00'", "'12:00'", "'allballs'"];
const JSON_WRONG = ['null', '"abc"', '-1', '0', '1e308', '-1e308', '[]', '{}', 'true', '"1 month"', '"-1000000 years"',
  '"25:61"', '9999999999', '2147483648', '"24:00"', '"P1D"', '"NaN"', '"Infinity"', '""', '"2031-13-45"',
  '[1,2,3,8]', '["a", null]', '{"a": {"b": []}}', '"\\u0000"', '0.5', '-0', '1e-400', '"+61 412 345 678"'];
const JSON_EDGE = ['NULL', "'null'", "'{}'", "'[]'", "'\"x\"'", "'0'", "'-1'", "'true'", "'1e1000'",
  "(repeat('[', 10000) || repeat(']', 10000))", "(repeat('{\"a\":', 10000) || '1' || repeat('}', 10000))",
  '(SELECT jsonb_agg(g) FROM generate_series(1, 100000) g)',
  "(SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 100000) g)",
  `to_jsonb(repeat('x', ${MB}))`, "'{\"a\": null}'", "'[{}, [], null, 1, \"s\"]'"];
const JSON_KEYS_EXTRA = ['days_of_week', 'earliest_time', 'latest_time', 'location_ids', 'expires_at', 'notifications',
  'alert_threshold', 'quiet_hours', 'start', 'end', 'enabled', 'daily_summary_time', 'times', 'starts', 'ends',
  'inactivity_threshold', 'exit_events', 'reentry', 'active', 'type', 'template', 'channel', 'subject', 'priority',
  'day', 'from', 'to', 'external_id', 'given_name', 'family_name', 'phone', 'email', 'patient_external_id',
  'provider_id', 'starts_at', 'ends_at', 'status', 'price', 'timezone', 'clinic', 'date', 'time', 'link'];

function arrayEdge(elemType, elemGood) {
  const e = elemGood || "'x'";
  return ['NULL', `'{}'`, `'{NULL}'`, `ARRAY[NULL, ${e}]`, `ARRAY[${e}]`, `ARRAY[${e}, ${e}, ${e}]`,
    `ARRAY(SELECT ${e} FROM generate_series(1, 100000))`,
    `ARRAY(SELECT CASE WHEN g % 3 = 0 THEN NULL ELSE ${e} END FROM generate_series(1, 100000) g)`,
    `'[5:6]={${elemType === 'text' ? 'de,en' : '1,2'}}'`, `'{{${elemType === 'text' ? 'de,en},{cbt,x' : '1,2},{3,4'}}}'`,
    ...(elemType === 'text' ? [`ARRAY[repeat('x', ${MB})]`, `'{"",""}'`, `ARRAY['de', 'en', 'tr', 'fr', 'xx', '']`] : []),
    ...(elemType === 'bigint' || elemType === 'integer' ? ["'{0,-1,9223372036854775807}'", "'{2147483647,-2147483648}'"] : []),
  ];
}

function randomJsonValue(depth) {
  const r = rnd();
  if (depth > 3 || r < 0.45) return JSON.parse(pick(JSON_WRONG.filter((v) => v !== '"\\u0000"')).replace(/^1e-400$/, '0'));
  if (r < 0.6) return pick(F.words);
  if (r < 0.75) { const a = []; for (let i = randInt(0, 4); i > 0; i--) a.push(randomJsonValue(depth + 1)); return a; }
  const o = {};
  for (let i = randInt(1, 4); i > 0; i--) o[pick(jsonKeys())] = randomJsonValue(depth + 1);
  return o;
}
function jsonKeys() { return [...F.settingsKeys, ...JSON_KEYS_EXTRA]; }

// ---------------------------------------------------------------- plausible values by name
function goodText(name) {
  const n = name.toLowerCase();
  if (/region/.test(n)) return pick(['AU', 'us', 'GB', 'DE', 'NZ']);
  if (n === 'to_number') return pick(F.smsNumbers);
  if (/phone|from_number|number|to_address/.test(n)) return pick([...F.phones[F.org1], '0412 345 678', '+61 412 345 679', 'x@example.org']);
  if (/email/.test(n)) return 'fuzz' + randInt(1, 999) + '@example.org';
  if (/timezone|^tz$/.test(n)) return pick(['UTC', 'Europe/Berlin', 'australia/sydney', 'America/New_York']);
  if (/channel/.test(n)) return pick(['sms', 'sms', 'email', 'voice', 'whatsapp', 'phone', 'letter']);
  if (/level/.test(n)) return pick(['admin', 'staff', 'readonly', 'webhook', 'sender']);
  if (/kind/.test(n)) return pick(['offer', 'booked', 'gone', 'declined', 'no_offer', 'help', 'stop', 'start', 'hint', 'contact_single', 'contact_several', 'app']);
  if (/locale/.test(n)) return pick(['en', 'de', 'de-AT', 'fr-CA']);
  if (/method/.test(n)) return pick(['exact', 'greedy']);
  if (/source/.test(n)) return pick(['cliniko', 'nookal', 'halaxy', 'csv']);
  if (/status/.test(n)) return pick(['booked', 'cancelled', 'fulfilled', 'noshow', 'arrived', 'entered-in-error', 'queued', 'sent', 'delivered', 'undelivered', 'failed', 'read', 'open', 'pending', 'solved', 'closed']);
  if (/answer/.test(n)) return pick(['accepted', 'declined', 'no_place']);
  if (/outcome/.test(n)) return pick(['reached', 'no_answer', 'voicemail', 'wrong_number']);
  if (/churn|risk/.test(n)) return pick(['low', 'medium', 'high', 'critical']);
  if (/gender/.test(n)) return pick(['female', 'male', 'diverse']);
  if (/therapy/.test(n)) return pick(['cbt', 'systemic', 'analytic']);
  if (/priority/.test(n)) return pick(['low', 'normal', 'high', 'urgent']);
  if (/schedule/.test(n)) return pick(['* * * * *', '*/5 * * * *']);
  if (/body/.test(n)) return pick(['YES', 'no', 'STOP', 'help', 'START', 'y', 'Opt Out', 'maybe later', 'Yes!!', 'N', 'stop all', 'OK']);
  if (/provider_message_id/.test(n)) return chance(0.3) && F.pmids.length ? pick(F.pmids) : 'fz-' + randInt(1, 1e9);
  if (/dedup/.test(n)) return 'fz:' + randInt(1, 50);
  if (/query/.test(n)) return pick(['Pat', 'Pat1 Ient', 'p3@example.org', '0412 000 003', 'smiht', 'x']);
  if (/cursor/.test(n)) return pick(['', 'abc', 'eyJpZCI6MX0=']);
  if (/name|title|subject/.test(n)) return 'Fuzz ' + randInt(1, 1e6);
  return chance(0.5) ? pick(F.words) : 'fuzz text ' + randInt(1, 1000);
}
function goodJson(name) {
  const n = name.toLowerCase();
  if (n === 'settings') {
    const o = {};
    const k = pick(F.settingsKeys.length ? F.settingsKeys : ['batch_size']);
    o[k] = pick([3, 2, '7 minutes', '10 minutes', 'AU', true, 1]);
    return o;
  }
  if (/preferences/.test(n)) return pick([{ days_of_week: [1, 3, 5], earliest_time: '08:00', latest_time: '12:30' },
    { location_ids: F.ids.location ? F.ids.location[F.org1].map(Number) : [1], expires_at: '2031-06-30T00:00:00Z' },
    { notifications: { email: true, sms: false }, alert_threshold: 'high', quiet_hours: { enabled: true, start: '22:00', end: '07:00' } }]);
  if (/hours/.test(n)) return [{ day: randInt(0, 8), from: '09:00', to: pick(['11:00', '08:00', '24:00']) }];
  if (/records/.test(n)) return [{ external_id: 'e-' + randInt(1, 20), given_name: 'Syn', family_name: 'C', phone: '0412 345 6' + randInt(10, 99),
    patient_external_id: 'e-' + randInt(1, 20), provider_id: Number(idOf('provider', F.org1) || 1),
    starts_at: '2031-03-03T09:00:00+11:00', ends_at: '2031-03-03T09:30:00+11:00', status: pick(['fulfilled', 'booked', 'noshow']), price: 95 }];
  if (/vars/.test(n)) return { clinic: 'X', date: 'Mon', time: '09:00', link: 'http://x' };
  if (/schedule/.test(n)) return { times: ['08:00', '20:00'], days_of_week: [1, 2, 3], starts: '2031-01-01', ends: null };
  if (/available_times/.test(n)) return [{ day: 1, from: '09:00', to: '12:00' }];
  return randomJsonValue(0);
}

// An argument generator: for type t and argument name n, `good(org)` gives a
// plausible SQL expression and `edges` the hostile ones.
function generatorFor(arg) {
  const t = arg.type; const n = arg.name || '';
  const lit = (v) => (v === null ? 'NULL' : q(v));
  if (t === 'bigint' && /(^|_)id$/.test(n)) {
    const table = n === 'org_id' ? 'organization' : idTable(n);
    return {
      good: (org, ctx) => {
        // a row tying this id to the call's other ids, when there is one
        if (!ctx.link || ctx.link[n] === undefined) {
          const cands = F.links[org].filter((l) => l[n] !== undefined && l[n] !== null);
          if (cands.length && chance(0.7)) ctx.link = pick(cands);
        }
        if (ctx.link && ctx.link[n]) return ctx.link[n];
        const v = idOf(table, org); return v === null ? pick(BIGINT_EDGE) : v;
      },
      edges: [...BIGINT_EDGE, 'OTHER_ORG', 'OTHER_ORG', 'OTHER_ORG'],
      table,
    };
  }
  switch (t) {
    case 'bigint': return { good: () => String(randInt(0, 50)), edges: BIGINT_EDGE };
    case 'integer': case 'smallint': return {
      good: () => String(/year/.test(n) ? randInt(1940, 2015) : /boost/.test(n) ? randInt(0, 40) : /count|size|max|places|results|batches|tasks/.test(n) ? randInt(1, 20) : randInt(0, 100)),
      edges: t === 'smallint' ? ['NULL', '0', '-1', '32767', '-32768'] : INT_EDGE };
    case 'double precision': case 'real': return {
      good: () => String(/lat/.test(n) ? 52.5 + rnd() / 10 : /lon/.test(n) ? 13.4 + rnd() / 10 : /distance/.test(n) ? randInt(1, 50) : Math.round(rnd() * 1000) / 10),
      edges: FLOAT_EDGE };
    case 'numeric': return { good: () => String(randInt(0, 10000) / 100), edges: NUMERIC_EDGE };
    case 'boolean': return { good: () => pick(['true', 'false']), edges: BOOL_EDGE };
    case 'text': case 'character varying': case 'name': case 'citext': {
      const phoneLike = /phone|number|to_address|from_address/.test(n);
      return { good: () => lit(goodText(n)), edges: [...TEXT_EDGE, ...(phoneLike ? PHONE_BAD : []), ...(chance(0.5) ? [] : [lit(pick(F.words))])] };
    }
    case 'timestamp with time zone': case 'timestamp without time zone': return {
      good: (org, ctx) => /^(starts_at|period_start|since|from)$/.test(n) && chance(0.8) ? `date_trunc('hour', now()) + interval '${ctx.hours} hours'`
        : /^(ends_at|period_end|until|to)$/.test(n) && chance(0.8) ? `date_trunc('hour', now()) + interval '${ctx.hours} hours 30 minutes'`
        : pick(["now()", "now() + interval '1 day'", "now() + interval '3 days 2 hours'", "now() - interval '10 days'", "'2031-03-03 09:00+11'", "now() + interval '8 days'"]),
      edges: TS_EDGE };
    case 'date': return { good: () => 'current_date + ' + randInt(-30, 30), edges: DATE_EDGE };
    case 'time without time zone': case 'time with time zone': return { good: () => q(randInt(0, 23) + ':' + randInt(10, 59)), edges: TIME_EDGE };
    case 'interval': return { good: () => pick(["'60 seconds'", "'7 minutes'", "'30 days'", "'1 hour'", "'10 seconds'"]), edges: INTERVAL_EDGE };
    case 'jsonb': case 'json': return { good: () => q(JSON.stringify(goodJson(n))), edges: [...JSON_EDGE, 'RANDOM_JSON', 'RANDOM_JSON', 'WRONG_JSON'] };
    case 'uuid': return { good: (org, ctx) => (ctx.link && ctx.link[n] ? q(ctx.link[n]) : chance(0.5) && F.leases.length ? q(pick(F.leases)) : F.tokens.length ? q(pick(F.tokens)) : 'gen_random_uuid()'), edges: UUID_EDGE };
    case 'regrole': return { good: () => q(pick([STAFF, NOGRANT])),
      edges: ['NULL', q(STAFF), q(NOGRANT), 'CURRENT_USER::text', q('pg_read_all_data'), q('pg_signal_backend'), q('-'), '0::oid::text', '4294967295::oid::text', q('nonexistent_role')] };
    case 'oid': case 'regclass': case 'regproc': case 'regtype': return { good: () => "'prm.patient'", edges: ['NULL', '0', "'-'", '4294967295'] };
    case 'text[]': case 'character varying[]': return {
      good: () => pick(["ARRAY['de']", "ARRAY['de', 'en']", "ARRAY['cbt']", "ARRAY['cbt', 'systemic']", "'{}'"]), edges: arrayEdge('text', "'de'") };
    case 'bigint[]': case 'integer[]': case 'smallint[]': return {
      good: () => `ARRAY[${randInt(1, 7)}, ${randInt(1, 7)}]`, edges: arrayEdge(t.replace('[]', ''), '1') };
    default:
      if (t.endsWith('[]')) return { good: () => "'{}'", edges: arrayEdge('other', null) };
      return { good: () => 'NULL', edges: ['NULL', "''", "'0'", "'-1'", "'x'", "'{}'", "'infinity'"] };
  }
}

function render(gen, arg, expr, org) {
  // resolve the symbolic edges
  if (expr === 'OTHER_ORG') {
    const other = org === F.org1 ? F.org2 : F.org1;
    const v = gen.table ? idOf(gen.table, other) : null;
    expr = v === null ? '987654321' : v;
  } else if (expr === 'RANDOM_JSON') {
    expr = q(JSON.stringify(randomJsonValue(0)));
  } else if (expr === 'WRONG_JSON') {
    const o = {}; o[pick(jsonKeys())] = JSON.parse(pick(JSON_WRONG.filter((v) => v !== '"\\u0000"')).replace(/^1e-400$/, '0'));
    expr = q(JSON.stringify(o));
  }
  if (expr === 'NULL') return `NULL::${arg.type}`;
  return `(${expr})::${arg.type}`;
}

// ---------------------------------------------------------------- the functions
let FUNCS = [];
let TRIGGER_FUNCS = [];
async function loadFunctions() {
  const rows = (await db.query(`
    SELECT p.oid::int AS oid, p.proname, p.prokind, p.pronargdefaults, p.provariadic <> 0 AS variadic,
           p.prorettype = 'trigger'::regtype AS is_trigger, p.prosecdef,
           coalesce(p.proargnames, '{}') AS argnames, p.proargmodes::text[] AS argmodes,
           ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, i) ORDER BY i) AS argtypes,
           pg_get_function_identity_arguments(p.oid) AS ident
      FROM pg_proc p WHERE p.pronamespace = 'prm'::regnamespace ORDER BY p.proname, p.oid`)).rows;
  for (const r of rows) {
    let names = r.argnames;
    if (r.argmodes) names = names.filter((_, i) => ['i', 'b', 'v'].includes(r.argmodes[i]));
    const args = r.argtypes.map((t, i) => ({ type: t, name: names[i] || '' }));
    const f = { oid: r.oid, name: r.proname, kind: r.prokind, ndefaults: r.pronargdefaults, variadic: r.variadic,
      secdef: r.prosecdef, args, sig: `${r.proname}(${r.ident})`, edgeIdx: { superuser: 0, staff: 0, nogrant: 0 } };
    if (r.is_trigger) { TRIGGER_FUNCS.push(f); continue; }
    if (r.prokind === 'a' || r.prokind === 'w') continue;
    f.gens = args.map(generatorFor);
    f.edgeList = [];
    args.forEach((a, i) => f.gens[i].edges.forEach((e) => f.edgeList.push([i, e])));
    FUNCS.push(f);
  }
}

function buildCall(f, mode, principal) {
  const org = principal === 'superuser' && chance(0.2) ? F.org2 : F.org1;
  const ctx = { hours: randInt(-48, 3000), link: null };
  let exprs = f.args.map((a, i) => render(f.gens[i], a, f.gens[i].good(org, ctx), org));
  if (mode === 'edge') {
    const [i, e] = f.edgeList[f.edgeIdx[principal]++ % f.edgeList.length];
    exprs[i] = render(f.gens[i], f.args[i], e, org);
  } else if (mode === 'random') {
    exprs = f.args.map((a, i) => (chance(0.35) ? render(f.gens[i], a, pick(f.gens[i].edges), org) : exprs[i]));
  }
  // sometimes leave the trailing defaults out
  let n = exprs.length;
  if (f.ndefaults > 0 && chance(0.25)) n -= randInt(1, f.ndefaults);
  exprs = exprs.slice(0, n);
  // does the call name organization 2 as its organization?
  const oi = f.args.findIndex((a) => a.name === 'org_id');
  const otherOrg = oi >= 0 && oi < n && exprs[oi] === `(${F.org2})::bigint`;
  if (f.variadic && exprs.length) exprs[exprs.length - 1] = 'VARIADIC ' + exprs[exprs.length - 1];
  const call = `prm.${f.name}(${exprs.join(', ')})`;
  if (f.kind === 'p') return { sql: `CALL ${call}`, otherOrg };
  return { sql: `SELECT left(r::text, 200) FROM ${call} AS r`, otherOrg };
}

// ---------------------------------------------------------------- running one call
function bump(obj, k, by) { obj[k] = (obj[k] || 0) + (by || 1); }
function shorten(s, n) { s = String(s); return s.length > n ? s.slice(0, n) + `… (${s.length} chars)` : s; }

let needRestore = false;
const journal = OUT ? fs.createWriteStream(path.join(OUT, 'committed.sql')) : null;
async function runCall(f, sql, principal, otherOrg) {
  const role = principal === 'superuser' ? null : principal === 'staff' ? STAFF : NOGRANT;
  const st = (R.functions[f.sig] = R.functions[f.sig] || { calls: 0, ok: 0, okSuper: 0, okStaff: 0, classes: {} });
  R.calls++; st.calls++; bump(R.byPrincipal, principal);
  let timer = null; let hung = false; let active = false;
  const started = Date.now();
  try {
    await db.query('BEGIN');
    await db.query(`SET LOCAL statement_timeout = ${TIMEOUT_MS}; SET LOCAL lock_timeout = ${TIMEOUT_MS}` + (role ? `; SET LOCAL ROLE ${role}` : ''));
    const pid = db.processID;
    active = true;
    timer = setTimeout(async () => {   // statement_timeout ignored: cancel, then terminate
      if (!active) return;
      hung = true;
      try { await ctl.query('SELECT pg_cancel_backend($1)', [pid]); } catch (_) {}
      timer = setTimeout(async () => {
        if (active) { try { await ctl.query('SELECT pg_terminate_backend($1)', [pid]); } catch (_) {} }
      }, 10000);
    }, TIMEOUT_MS + 10000);
    await db.query(sql);
    active = false; clearTimeout(timer);
    R.ok++; st.ok++; if (principal === 'superuser') st.okSuper++; else if (principal === 'staff') st.okStaff++;
    // tenancy: staff of organization 1 working in organization 2, or a role
    // with no grant running a function with the owner's rights
    if ((principal === 'staff' && otherOrg) || (principal === 'nogrant' && f.secdef)) {
      const key = f.sig + ' ' + principal;
      if (!R.tenancy.has(key)) R.tenancy.set(key, { fn: f.sig, principal, sql: reproducer(sql, role), count: 0 });
      R.tenancy.get(key).count++;
    }
    if (chance(0.7)) {
      await db.query('COMMIT');
      // the journal of committed calls replays the run's changes, to bisect a broken invariant
      if (journal) journal.write(`${reproducer(sql, role)}${role ? ' RESET ROLE;' : ''}\n`);
    } else await db.query('ROLLBACK');
    if (/^(grant_access|revoke_access|sync_access_privileges|erase_patient)$/.test(f.name)) needRestore = true;
  } catch (err) {
    active = false; clearTimeout(timer);
    const elapsed = Date.now() - started;
    if (hung) R.hangs.push({ fn: f.sig, principal, seconds: elapsed / 1000, sql: reproducer(sql, role) });
    if (isConnLoss(err)) {
      R.crashes.push({ fn: f.sig, principal, message: err.message, code: err.code || null, sql: reproducer(sql, role) });
      console.log(`!! connection lost after ${f.sig} as ${principal}: ${err.message}`);
      f.crashes = (f.crashes || 0) + 1;
      if (f.crashes >= MAX_CRASHES_PER_FUNCTION) R.skipped.push(`${f.sig}: stopped after ${f.crashes} crashes`);
      await reconnect();
      needRestore = true;
      return;
    }
    const code = err.code || '?????';
    bump(st.classes, code.slice(0, 2));
    if (code === '57014') R.timeouts++;
    noteError(f.sig, principal, err, reproducer(sql, role));
    try { await db.query('ROLLBACK'); } catch (e2) { if (isConnLoss(e2)) await reconnect(); }
  }
}
// count an error by SQLSTATE; keep the first reproducer of each distinct
// internal error and of each function whose message echoes a huge argument
function noteError(fn, principal, err, repro, tally) {
  const code = err.code || '?????';
  const t = tally || R;
  bump(t.classes, code.slice(0, 2)); bump(t.codes, code);
  const norm = String(err.message).replace(/\d+/g, 'N').slice(0, 200);
  if (isInternal(err)) {
    const key = fn + ' ' + code + ' ' + norm;
    const e = R.internal.get(key);
    if (e) e.count++;
    else R.internal.set(key, { fn, principal, code, message: shorten(err.message, 300),
      where: err.routine ? `${err.routine} (${err.file}:${err.line})` : null, count: 1, sql: repro });
  }
  const len = String(err.message).length + String(err.detail || '').length;
  if (len > BIG_MESSAGE) {
    const key = fn + ' ' + code;
    const e = R.oversized.get(key);
    if (e) { e.count++; e.maxLength = Math.max(e.maxLength, len); }
    else R.oversized.set(key, { fn, code, message: shorten(err.message, 120), maxLength: len, count: 1, sql: repro });
  }
}
function reproducer(sql, role) {
  return (role ? `SET ROLE ${role}; ` : '') + sql + ';';
}

async function restoreAccess() {
  // the fuzzer may have granted, revoked or erased: put the two roles back
  await db.query(`SELECT prm.revoke_access(r::regrole, o.id) FROM prm.organization o,
      (VALUES ('${STAFF}'), ('${NOGRANT}')) v(r)
    WHERE EXISTS (SELECT 1 FROM prm.org_access a WHERE a.org_id = o.id AND a.role_id = r::regrole)`);
  await db.query(`SELECT prm.grant_access('${STAFF}', $1, 'staff')`, [F.org1]);
  needRestore = false;
}

// ---------------------------------------------------------------- phase 1: every function
async function fuzzFunctions() {
  const until = Date.now() + CALL_SECONDS * 1000;
  let round = 0;
  const principals = ['superuser', 'staff', 'nogrant'];
  while (Date.now() < until) {
    for (const f of FUNCS) {
      if (Date.now() >= until) break;
      if ((f.crashes || 0) >= MAX_CRASHES_PER_FUNCTION) continue;
      for (const p of principals) {
        if (p === 'nogrant' && round % 3 !== 0) continue;
        const systematic = f.edgeIdx[p] < f.edgeList.length;
        const mode = round === 0 ? 'good' : systematic && chance(0.7) ? 'edge' : chance(0.3) ? 'good' : 'random';
        const { sql, otherOrg } = buildCall(f, mode, p);
        await runCall(f, sql, p, otherOrg);
        if (needRestore) { try { await restoreAccess(); } catch (e) { console.log('restore failed: ' + e.message); } }
      }
    }
    round++;
    if (round % 5 === 0) { try { await loadFixture(); } catch (_) { /* keep the old ids */ } }
    if (round % 5 === 0) console.log(`.. round ${round}: ${R.calls} calls, ${R.internal.size} internal errors, ${R.crashes.length} crashes, ${Math.round((until - Date.now()) / 1000)} s left`);
  }
  R.rounds = round;
}

// ---------------------------------------------------------------- phase 2: trigger functions on wrong tables
async function orgChecksum(org) {
  // everything of organization 2 a cross-tenant write could touch
  const r = await db.query(`SELECT md5(coalesce((SELECT string_agg(s::text, ',' ORDER BY s::text) FROM prm.patient_stats s WHERE s.org_id = $1), '')
        || coalesce((SELECT string_agg(w.id || ':' || w.priority_score || w.status || coalesce(w.current_appointment_at::text, ''), ',' ORDER BY w.id) FROM prm.waitlist_entry w WHERE w.org_id = $1), '')
        || (SELECT count(*) FROM prm.event e WHERE e.org_id = $1)::text) AS h`, [org]);
  return r.rows[0].h;
}
async function attackTriggers() {
  const defs = (await db.query(`SELECT t.tgfoid::int AS foid, pg_get_triggerdef(t.oid) AS def, t.tgrelid::regclass::text AS rel
      FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
     WHERE p.pronamespace = 'prm'::regnamespace AND NOT t.tgisinternal`)).rows;
  let before = await orgChecksum(F.org2);
  const p2 = F.ids.patient[F.org2][0] || '1';
  const pr2 = F.ids.provider[F.org2][0] || '1';
  const p1 = F.ids.patient[F.org1][0] || '1';
  const pr1 = F.ids.provider[F.org1][0] || '1';
  const TYPES = ['text', 'integer', 'bigint', 'boolean', 'timestamp with time zone', 'jsonb', 'numeric'];
  for (const f of TRIGGER_FUNCS) {
    const mine = defs.filter((d) => d.foid === f.oid);
    // the real table's columns, to build look-alikes with the wrong types
    const rel = mine.length ? mine[0].rel : 'prm.appointment';
    const cols = (await db.query(`SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
        WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, [rel])).rows;
    const right = cols.map((c) => [c.attname, c.type]);
    const shapes = [
      ['no columns', []],
      ['all text', cols.map((c) => [c.attname, 'text'])],
      ['all integer', cols.map((c) => [c.attname, 'integer'])],
      ['all boolean', cols.map((c) => [c.attname, 'boolean'])],
      ['right types', right],
      ['first two columns', right.slice(0, 2)],
      ['types reversed', cols.map((c, i) => [c.attname, cols[cols.length - 1 - i].type])],
    ];
    // the right types but one column: every column once as text, once as integer
    cols.forEach((c, i) => {
      for (const t of ['text', 'integer']) {
        if (t === c.type) continue;
        shapes.push([`${c.attname} ${t}`, right.map((x, j) => (j === i ? [x[0], t] : x))]);
      }
    });
    for (let k = 0; k < 4; k++) shapes.push([`mixed #${k + 1}`, cols.map((c) => [c.attname, chance(0.5) ? c.type : pick(TYPES)])]);
    const fn = 'prm.' + f.name;
    const timings = [...new Set([
      ...mine.map((d) => d.def.replace(/^CREATE TRIGGER \S+ /, '').replace(/ ON \S+ /, ' ON pg_temp.fuzz_trg ')),
      `BEFORE INSERT OR UPDATE OR DELETE ON pg_temp.fuzz_trg FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
      `AFTER INSERT OR UPDATE OR DELETE ON pg_temp.fuzz_trg FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
      `AFTER INSERT ON pg_temp.fuzz_trg REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ${fn}('patient_id')`,
      `AFTER UPDATE ON pg_temp.fuzz_trg REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ${fn}('nonexistent', '', 'x')`,
      `BEFORE TRUNCATE ON pg_temp.fuzz_trg FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
    ])];
    let crashes = 0;
    for (const principal of ['staff', 'nogrant', 'superuser']) {
      const role = principal === 'staff' ? STAFF : principal === 'nogrant' ? NOGRANT : null;
      for (const [shapeName, shape] of shapes) {
        for (const timing of timings) for (const target of principal === 'superuser' ? ['own'] : ['own', 'other']) {
          if (crashes >= MAX_CRASHES_PER_FUNCTION) break;
          // rows naming organization 1 (the staff role's own) or 2 (another's)
          const org = target === 'own' ? F.org1 : F.org2;
          const value = (type, name) => {
            const num = /^(bigint|integer|smallint|numeric|double precision|real)$/.test(type);
            if (num && name === 'org_id') return `(${org})::${type}`;
            if (num && name === 'patient_id') return `(${target === 'own' ? p1 : p2})::${type}`;
            if (num && name === 'provider_id') return `(${target === 'own' ? pr1 : pr2})::${type}`;
            if (num) return '1';
            if (/^timestamp/.test(type)) return "now() + interval '1 day'";
            if (/^time /.test(type)) return "'08:00'";
            if (type === 'boolean') return 'true';
            if (type === 'text') return /status/.test(name) ? "'booked'" : "'1'";
            if (type === 'jsonb') return "'{}'";
            if (type.endsWith('[]')) return "'{}'";
            return 'NULL';
          };
          const colDefs = shape.map(([n, t]) => `${n} ${t}`).join(', ');
          const vals = shape.length ? shape.map(([n, t]) => value(t, n)).join(', ') : '';
          const stmts = [
            `CREATE TEMP TABLE fuzz_trg (${colDefs}) ON COMMIT DROP`,
            `CREATE TRIGGER fuzz_attack ${timing}`,
            shape.length ? `INSERT INTO pg_temp.fuzz_trg VALUES (${vals}), (${vals})` : 'INSERT INTO pg_temp.fuzz_trg DEFAULT VALUES',
            shape.length ? `UPDATE pg_temp.fuzz_trg SET ${shape[0][0]} = ${shape[0][0]}` : 'SELECT 1',
            'TABLE pg_temp.fuzz_trg',
            'DELETE FROM pg_temp.fuzz_trg',
            'TRUNCATE pg_temp.fuzz_trg',
          ];
          const sig = `${f.sig} [trigger attack]`;
          const st = (R.functions[sig] = R.functions[sig] || { calls: 0, ok: 0, okSuper: 0, okStaff: 0, classes: {} });
          st.calls++; bump(R.triggerAttacks.byPrincipal, principal);
          R.triggerAttacks.statements++;
          const script = (role ? `SET ROLE ${role}; ` : '') + 'BEGIN; ' + stmts.join('; ') + '; COMMIT;';
          try {
            await db.query('BEGIN');
            await db.query(`SET LOCAL statement_timeout = ${TIMEOUT_MS}` + (role ? `; SET LOCAL ROLE ${role}` : ''));
            for (const s of stmts) await db.query(s);
            await db.query('COMMIT');
            R.triggerAttacks.ok++; st.ok++;
            if (principal === 'superuser') st.okSuper++; else st.okStaff++;
            if (principal !== 'superuser') {
              R.triggerAttacks.succeeded.push(`${principal}: ${f.name} on ${shapeName}, ${target} organization: ${timing.replace(/ ON pg_temp.*/, '')}`);
              const now = await orgChecksum(F.org2);
              if (now !== before) {
                if (target === 'other') R.triggerAttacks.crossTenant.push({ fn: f.sig, shape: shapeName, timing, sql: script });
                before = now;
              }
            }
          } catch (err) {
            if (isConnLoss(err)) {
              crashes++;
              R.crashes.push({ fn: sig, principal, message: err.message, code: err.code || null, sql: script });
              console.log(`!! connection lost in the trigger attack on ${f.sig} as ${principal}: ${err.message}`);
              await reconnect();
              if (crashes >= MAX_CRASHES_PER_FUNCTION) R.skipped.push(`${sig}: stopped after ${crashes} crashes`);
              continue;
            }
            const code = err.code || '?????';
            bump(st.classes, code.slice(0, 2));
            if (code === '57014') R.timeouts++;
            noteError(sig, principal, err, script, R.triggerAttacks);
            try { await db.query('ROLLBACK'); } catch (e2) { if (isConnLoss(e2)) await reconnect(); }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------- phase 3: sqlsmith
function logSize() { try { return fs.statSync(SERVER_LOG).size; } catch (_) { return null; } }
function readLogFrom(off) {
  if (off === null) return '';
  try {
    const fd = fs.openSync(SERVER_LOG, 'r'); const size = fs.fstatSync(fd).size;
    const len = Math.min(size - off, 256 * MB); const buf = Buffer.alloc(Math.max(0, len));
    fs.readSync(fd, buf, 0, buf.length, off); fs.closeSync(fd); return buf.toString('utf8');
  } catch (_) { return ''; }
}
function conninfoValue(v) { return "'" + String(v).replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'"; }
async function runSqlsmith() {
  if (SQLSMITH_SECONDS <= 0) { R.sqlsmith = { skipped: 'FUZZ_SQLSMITH_SECONDS=0' }; return; }
  const parts = [`dbname=${conninfoValue(DB)}`,
    `options=${conninfoValue(`-c role=${STAFF} -c log_error_verbosity=verbose -c log_min_error_statement=error`)}`,
    'application_name=prm_fuzz_sqlsmith'];
  const args = [`--target=${parts.join(' ')}`, `--seed=${SEED}`, `--max-queries=${SQLSMITH_QUERIES}`, '--exclude-catalog', '--verbose'];
  const res = await new Promise((resolve) => {
    let out = ''; let err = ''; let killed = false;
    let child;
    try { child = spawn('sqlsmith', args, { env }); } catch (e) { resolve({ error: e.message }); return; }
    child.on('error', (e) => resolve({ error: e.message }));
    child.stdout.on('data', (d) => { out += d; if (out.length > 4 * MB) out = out.slice(-MB); });
    child.stderr.on('data', (d) => { err += d; if (err.length > 4 * MB) err = err.slice(-MB); });
    const timer = setTimeout(() => { killed = true; child.kill('SIGINT'); setTimeout(() => child.kill('SIGKILL'), 5000); }, SQLSMITH_SECONDS * 1000);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, killed, out, err }); });
  });
  if (res.error) { R.sqlsmith = { error: res.error }; return; }
  const qs = [...res.err.matchAll(/queries: (\d+)/g)].map((m) => Number(m[1]));
  const errs = [...res.err.matchAll(/^(\d+)\t(ERROR|FATAL|PANIC):\s*(.*)$/gm)].map((m) => ({ count: Number(m[1]), msg: m[3] }));
  const dots = (res.err.match(/^[.eSCt]+$/gm) || []).join('');
  R.sqlsmith = {
    queries: qs.length ? Math.max(...qs) : dots.length,
    errors: dots.split('').filter((c) => c === 'e').length,
    errorRate: (res.err.match(/error rate: ([\d.]+)/) || [])[1] || null,
    exit: res.code, signal: res.signal, stoppedByTimeout: res.killed,
    topErrors: errs.slice(0, 8),
    tail: res.code && !res.killed ? shorten((res.out + res.err).slice(-2000), 2000) : undefined,
  };
  // a broken connection ends sqlsmith: make sure the server is back before the checks
  try { await db.query('SELECT 1'); } catch (e) { await reconnect(); }
}

// ---------------------------------------------------------------- phase 4: invariants
const ACTIVE = "('proposed', 'pending', 'booked', 'arrived', 'checked-in', 'fulfilled')";
const INVARIANTS = [
  ['at most one booked appointment per slot',
    `SELECT org_id, slot_id, count(*) FROM prm.appointment WHERE slot_id IS NOT NULL AND status IN ${ACTIVE} GROUP BY 1, 2 HAVING count(*) > 1`],
  ['no slot booked by two appointments (slot.booked_appointment_id) beyond one slot per appointment time',
    `SELECT s.org_id, s.booked_appointment_id, count(*) FROM prm.slot s JOIN prm.appointment a ON a.org_id = s.org_id AND a.id = s.booked_appointment_id
      WHERE s.status = 'busy' AND a.slot_id = s.id GROUP BY 1, 2 HAVING count(*) > 1`],
  ['no two overlapping booked appointments of one provider',
    `SELECT a.org_id, a.provider_id, a.id, b.id FROM prm.appointment a JOIN prm.appointment b
        ON b.org_id = a.org_id AND b.provider_id = a.provider_id AND b.id > a.id
       AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
     WHERE a.status IN ${ACTIVE} AND b.status IN ${ACTIVE}`],
  ['at most one accepted offer per slot',
    `SELECT org_id, slot_id, count(*) FROM prm.offer WHERE status = 'accepted' GROUP BY 1, 2 HAVING count(*) > 1`],
  ['each waitlist entry booked at most once',
    `SELECT org_id, waitlist_entry_id, count(*) FROM prm.offer WHERE status = 'accepted' GROUP BY 1, 2 HAVING count(*) > 1`],
  ['the entry of an accepted offer is no longer waiting',
    `SELECT o.org_id, o.id, w.id, w.status FROM prm.offer o JOIN prm.waitlist_entry w ON w.org_id = o.org_id AND w.id = o.waitlist_entry_id
      WHERE o.status = 'accepted' AND w.status = 'waiting'`],
  ['an accepted offer\'s slot is busy and booked for the offer\'s patient',
    `SELECT o.org_id, o.id, s.id, s.status, a.patient_id, o.patient_id FROM prm.offer o
       JOIN prm.slot s ON s.org_id = o.org_id AND s.id = o.slot_id
       LEFT JOIN prm.appointment a ON a.org_id = s.org_id AND a.id = s.booked_appointment_id
      WHERE o.status = 'accepted' AND (s.status <> 'busy' OR a.id IS NULL OR a.patient_id <> o.patient_id)`],
  ['a filled slot is busy and has its appointment',
    `SELECT org_id, id, status, booked_appointment_id FROM prm.slot WHERE fill_status = 'filled' AND (status <> 'busy' OR booked_appointment_id IS NULL)`],
  ['open offers only on free slots',
    `SELECT o.org_id, o.id, s.id, s.status FROM prm.offer o JOIN prm.slot s ON s.org_id = o.org_id AND s.id = o.slot_id
      WHERE o.status = 'open' AND s.status <> 'free'`],
  ['at most one open offer per patient',
    `SELECT org_id, patient_id, count(*) FROM prm.offer WHERE status = 'open' GROUP BY 1, 2 HAVING count(*) > 1`],
  ['offers, slots and entries of one organization',
    `SELECT o.org_id, o.id FROM prm.offer o LEFT JOIN prm.waitlist_entry w ON w.org_id = o.org_id AND w.id = o.waitlist_entry_id
      WHERE w.id IS NULL OR w.patient_id <> o.patient_id`],
  ['outbox: no message sending without a lease',
    `SELECT org_id, id, status FROM prm.outbound_message WHERE status = 'sending' AND (lease_token IS NULL OR lease_expires_at IS NULL)`],
  ['outbox: no lease on a message that is not sending',
    `SELECT org_id, id, status FROM prm.outbound_message WHERE status <> 'sending' AND (lease_token IS NOT NULL OR lease_expires_at IS NOT NULL)`],
  ['outbox: no lease held by two messages',
    `SELECT lease_token, count(*) FROM prm.outbound_message WHERE lease_token IS NOT NULL GROUP BY 1 HAVING count(*) > 1`],
  ['outbox: no message both in the queue and in the history',
    `SELECT h.org_id, h.id FROM prm.outbound_message_history h JOIN prm.outbound_message m ON m.org_id = h.org_id AND m.id = h.id`],
  ['outbox: attempts within 0..max and sent messages have been attempted',
    `SELECT org_id, id, status, attempts FROM prm.outbound_message WHERE attempts < 0 OR (status IN ('sent', 'delivered', 'read') AND attempts < 1 AND provider_message_id IS NULL)`],
  ['waitlist scores within 0..100 and boosts within 0..40',
    `SELECT org_id, id, priority_score, manual_boost FROM prm.waitlist_entry WHERE priority_score NOT BETWEEN 0 AND 100 OR manual_boost NOT BETWEEN 0 AND 40`],
];
async function checkInvariants() {
  for (const [name, sql] of INVARIANTS) {
    try {
      const r = await db.query(`SELECT count(*) OVER () AS n, x::text AS row FROM (${sql}) x LIMIT 3`);
      const n = r.rows.length ? Number(r.rows[0].n) : 0;
      R.invariants.push({ name, pass: n === 0, violations: n, sample: r.rows.map((x) => x.row), sql });
    } catch (e) {
      R.invariants.push({ name, pass: false, violations: null, error: `${e.code}: ${e.message}`, sql });
    }
  }
  // counts kept incrementally must equal a rebuild from scratch
  const name = 'patient statistics kept incrementally equal a rebuild (rebuild_patient_stats)';
  try {
    await db.query('BEGIN');
    await db.query('CREATE TEMP TABLE fuzz_stats_before ON COMMIT DROP AS SELECT org_id, patient_id, to_jsonb(s) AS j FROM prm.patient_stats s');
    await db.query('SELECT prm.rebuild_patient_stats(id) FROM prm.organization');
    const diff = (await db.query(`SELECT b.org_id, b.patient_id, e.key, e.value::text AS before, (a.j -> e.key)::text AS after,
          count(*) OVER () AS n, count(*) OVER (PARTITION BY e.key) AS per_key
        FROM fuzz_stats_before b
        FULL JOIN (SELECT org_id, patient_id, to_jsonb(s) AS j FROM prm.patient_stats s) a USING (org_id, patient_id)
        CROSS JOIN LATERAL jsonb_each(coalesce(b.j, a.j)) e
       WHERE e.key <> 'computed_at' AND (b.j IS NULL OR a.j IS NULL OR a.j -> e.key IS DISTINCT FROM e.value)
       ORDER BY e.key, b.org_id, b.patient_id`)).rows;
    await db.query('ROLLBACK');
    const keys = {};
    for (const d of diff) if (!keys[d.key]) keys[d.key] = d;
    R.invariants.push({ name, pass: diff.length === 0, violations: diff.length,
      sample: Object.values(keys).slice(0, 4).map((d) => `${d.key} of patient ${d.patient_id} (org ${d.org_id}): ${d.before} kept, ${d.after} rebuilt (${d.per_key} rows)`),
      sql: 'compare prm.patient_stats before and after SELECT prm.rebuild_patient_stats(id) FROM prm.organization' });
  } catch (e) {
    try { await db.query('ROLLBACK'); } catch (_) {}
    R.invariants.push({ name, pass: false, error: `${e.code}: ${e.message}` });
  }
}

// ---------------------------------------------------------------- the server log
function scanLog(text) {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (/terminated by signal|was terminated by exception|PANIC:|TRAP:/.test(l)) {
      const next = lines[i + 1] && /Failed process was running/.test(lines[i + 1]) ? lines[i + 1] : '';
      R.logCrashes.push(shorten(l.replace(/^.*?(LOG|PANIC|TRAP)/, '$1'), 300) + (next ? '\n      ' + shorten(next.replace(/^.*?DETAIL:\s*/, ''), 1500) : ''));
    }
    const m = l.match(/ERROR:\s+(XX\d\d\d|58\d\d\d):\s+(.*)$/);
    if (m) {
      let loc = ''; let stmt = '';
      for (let j = i + 1; j < Math.min(lines.length, i + 8); j++) {
        const lm = lines[j].match(/LOCATION:\s+(.*)$/); if (lm) loc = lm[1];
        const sm = lines[j].match(/STATEMENT:\s+(.*)$/);
        if (sm) { stmt = sm[1]; for (let k = j + 1; k < lines.length && !/^\d{4}-\d\d-\d\d /.test(lines[k]); k++) stmt += '\n' + lines[k]; break; }
      }
      R.logInternal.push({ code: m[1], message: shorten(m[2], 300), location: loc, statement: shorten(stmt, 3000) });
    }
  }
}
// Internal errors of PostgreSQL itself that sqlsmith's queries meet whether
// or not they also call a prm function, each with a reproducer that names
// no prm object (checked on PostgreSQL 15.x): not counted against prm.
const KNOWN_CORE_ERRORS = [
  // SELECT pg_catalog.unknownsend(cast(nullif(case when cast(null as float4) <= cast(null as float4)
  //   then cast(null as unknown) else cast(null as unknown) end,
  //   cast(coalesce(cast(null as unknown), cast(null as unknown)) as unknown)) as unknown))
  /^failed to find conversion function from unknown to /,
];
function prmSourceFiles() {
  try { return new Set(fs.readdirSync(SRC).filter((f) => /\.c$/.test(f))); } catch (_) { return new Set(); }
}

// ---------------------------------------------------------------- report
function printReport() {
  const prmFiles = prmSourceFiles();
  const smithInternal = R.logInternal.map((e) => {
    const file = (e.location.match(/, ([\w.-]+\.c):\d+/) || [])[1];
    // prm's: raised in prm's C, or by a statement that calls a prm function
    // (sqlsmith's queries all read prm's tables: that alone does not count)
    const knownCore = !(file && prmFiles.has(file)) && KNOWN_CORE_ERRORS.some((re) => re.test(e.message));
    return { ...e, inPrm: !knownCore && ((file && prmFiles.has(file)) || /\bprm\.[a-z_0-9]+\s*\(/.test(e.statement)) };
  });
  const distinctSmith = new Map();
  for (const e of smithInternal) { const k = e.code + e.message.replace(/\d+/g, 'N'); if (!distinctSmith.has(k)) distinctSmith.set(k, { ...e, count: 0 }); distinctSmith.get(k).count++; }
  const prmSmith = [...distinctSmith.values()].filter((e) => e.inPrm);
  const coreSmith = [...distinctSmith.values()].filter((e) => !e.inPrm);
  const failedInv = R.invariants.filter((i) => !i.pass);
  const logCrashCount = R.logCrashes.length;
  const crashCount = Math.max(R.crashes.length, logCrashCount);

  const P = (s) => console.log(s);
  P('');
  P('==================== prm fuzz report ====================');
  P(`seed ${R.seed} (FUZZ_SEED=${R.seed} repeats the argument choices), statement_timeout ${TIMEOUT_MS} ms`);
  P(`functions: ${FUNCS.length} called directly, ${TRIGGER_FUNCS.length} trigger functions attacked through temp tables; ${R.rounds} rounds`);
  P(`calls: ${R.calls} (superuser ${R.byPrincipal.superuser || 0}, staff ${R.byPrincipal.staff || 0}, no grant ${R.byPrincipal.nogrant || 0}); succeeded ${R.ok}`);
  const classes = Object.entries(R.classes).sort();
  P(`errors by SQLSTATE class: ${classes.map(([c, n]) => `${c}: ${n}`).join(', ') || 'none'}`);
  const topCodes = Object.entries(R.codes).sort((a, b) => b[1] - a[1]).slice(0, 14);
  P(`  most frequent: ${topCodes.map(([c, n]) => `${c} ${n}`).join(', ')}`);
  P(`timeouts (57014): ${R.timeouts}; statements that ignored statement_timeout (cancelled/terminated by the fuzzer): ${R.hangs.length}`);
  P(`trigger attacks: ${R.triggerAttacks.statements} scripts (staff ${R.triggerAttacks.byPrincipal.staff || 0}, no grant ${R.triggerAttacks.byPrincipal.nogrant || 0}, superuser ${R.triggerAttacks.byPrincipal.superuser || 0}), ${R.triggerAttacks.ok} ran to the end; ` +
    `errors ${Object.entries(R.triggerAttacks.classes).map(([c, n]) => `${c}: ${n}`).join(', ') || 'none'}; cross-tenant changes: ${R.triggerAttacks.crossTenant.length}`);
  if (R.sqlsmith) {
    const s = R.sqlsmith;
    if (s.skipped || s.error) P(`sqlsmith: ${s.skipped || 'not run: ' + s.error}`);
    else P(`sqlsmith (as ${STAFF}, ${SQLSMITH_SECONDS} s): ${s.queries} queries, ${s.errors} errors (rate ${s.errorRate}), exit ${s.exit}${s.signal ? ' ' + s.signal : ''}${s.stoppedByTimeout ? ' (stopped at its time limit)' : ''}`);
    if (s.topErrors && s.topErrors.length) P('  top errors: ' + s.topErrors.slice(0, 5).map((e) => `${e.count}× ${shorten(e.msg, 70)}`).join(' | '));
    if (s.tail) P('  sqlsmith ended with:\n' + s.tail.split('\n').map((l) => '    ' + l).join('\n'));
  }
  P(`internal errors: ${R.internal.size} distinct in direct calls${SERVER_LOG ? `, ${prmSmith.length} distinct from sqlsmith in prm (+${coreSmith.length} in PostgreSQL core, not counted)` : ' (no server log: sqlsmith internal errors unchecked)'}`);
  for (const e of R.internal.values()) {
    P(`  - ${e.fn} as ${e.principal}: ${e.code} ${e.message}${e.where ? ' at ' + e.where : ''} (${e.count}×)`);
    P(`      reproducer: ${shorten(e.sql, 1500)}`);
  }
  for (const e of prmSmith) P(`  - sqlsmith: ${e.code} ${e.message} at ${e.location} (${e.count}×)\n      reproducer: ${e.statement}`);
  for (const e of coreSmith) P(`  - (core) sqlsmith: ${e.code} ${e.message} at ${e.location} (${e.count}×)\n      reproducer: ${e.statement}`);
  P(`crashes: ${crashCount} (connections lost: ${R.crashes.length}; server log "terminated by signal"/PANIC: ${SERVER_LOG ? logCrashCount : 'no log'})`);
  for (const c of R.crashes) P(`  - ${c.fn} as ${c.principal}: ${c.message}\n      reproducer: ${shorten(c.sql, 1500)}`);
  for (const c of R.logCrashes) P(`  - log: ${c}`);
  for (const h of R.hangs) P(`  - ignored statement_timeout: ${h.fn} as ${h.principal}, ${h.seconds} s\n      reproducer: ${shorten(h.sql, 1500)}`);
  for (const c of R.triggerAttacks.crossTenant) P(`  - cross-tenant change through ${c.fn} (${c.shape}; ${c.timing})\n      reproducer: ${c.sql}`);
  P(`tenancy: calls that succeeded as ${STAFF} on organization 2 or as ${NOGRANT} on a SECURITY DEFINER function: ${R.tenancy.size} distinct`);
  for (const t of R.tenancy.values()) P(`  - ${t.fn} as ${t.principal} (${t.count}×)\n      reproducer: ${shorten(t.sql, 1000)}`);
  P(`error messages that echo an argument whole (> ${BIG_MESSAGE} characters): ${R.oversized.size} function(s)`);
  for (const e of R.oversized.values()) P(`  - ${e.fn}: ${e.code} "${e.message}" up to ${e.maxLength} characters (${e.count}×)\n      reproducer: ${shorten(e.sql, 600)}`);
  for (const s of R.skipped) P(`  skipped: ${s}`);
  P('invariants:');
  for (const i of R.invariants) {
    P(`  ${i.pass ? 'PASS' : 'FAIL'}  ${i.name}${i.pass ? '' : i.error ? ' — ' + i.error : ` — ${i.violations} violation(s), e.g. ${i.sample.join('; ')}`}`);
  }
  const never = FUNCS.filter((f) => !(R.functions[f.sig] && R.functions[f.sig].okSuper)).map((f) => f.sig);
  if (never.length) P(`functions that never succeeded as superuser (their deeper paths went untested): ${never.join(', ')}`);
  const neverStaff = FUNCS.filter((f) => f.secdef && !(R.functions[f.sig] && R.functions[f.sig].okStaff)).map((f) => f.name);
  if (neverStaff.length) P(`SECURITY DEFINER functions that never succeeded as ${STAFF}: ${neverStaff.join(', ')}`);
  const failures = R.tenancy.size + crashCount + R.internal.size + prmSmith.length + failedInv.length + R.hangs.length + R.triggerAttacks.crossTenant.length;
  P(`result: ${failures === 0 ? 'PASS' : 'FAIL'} — crashes ${crashCount}, tenancy breaches ${R.tenancy.size}, internal errors ${R.internal.size + prmSmith.length}, ignored timeouts ${R.hangs.length}, cross-tenant trigger writes ${R.triggerAttacks.crossTenant.length}, invariants failed ${failedInv.length} of ${R.invariants.length}`);
  if (OUT) {
    const json = { ...R, internal: [...R.internal.values()], tenancy: [...R.tenancy.values()], oversized: [...R.oversized.values()], sqlsmithInternal: [...distinctSmith.values()] };
    fs.writeFileSync(path.join(OUT, 'report.json'), JSON.stringify(json, null, 1));
    const perFn = Object.entries(R.functions).map(([k, v]) => `${k}\tcalls ${v.calls}\tok ${v.ok} (superuser ${v.okSuper}, staff ${v.okStaff})\t${Object.entries(v.classes).map(([c, n]) => `${c}:${n}`).join(' ')}`);
    fs.writeFileSync(path.join(OUT, 'functions.txt'), perFn.join('\n') + '\n');
    P(`details: ${path.join(OUT, 'report.json')}, per function: ${path.join(OUT, 'functions.txt')}, committed calls: ${path.join(OUT, 'committed.sql')}`);
  }
  return failures === 0 ? 0 : 1;
}

// ---------------------------------------------------------------- main
(async () => {
  const logStart = SERVER_LOG ? logSize() : null;
  try {
    db = await connectRetry(30);
    ctl = await connectRetry(30);
    await loadFixture();
    await loadFunctions();
  } catch (e) {
    console.error('fuzz setup failed: ' + e.message);
    process.exit(2);
  }
  console.log(`prm fuzz: ${FUNCS.length} functions + ${TRIGGER_FUNCS.length} trigger functions, ${CALL_SECONDS} s of calls, ${SQLSMITH_SECONDS} s of sqlsmith, seed ${SEED}`);
  await restoreAccess();
  await fuzzFunctions();
  console.log(`.. direct calls done: ${R.calls}; attacking trigger functions`);
  await restoreAccess();
  await attackTriggers();
  console.log('.. running sqlsmith');
  await restoreAccess();
  await runSqlsmith();
  console.log('.. checking invariants');
  await checkInvariants();
  if (SERVER_LOG && logStart !== null) scanLog(readLogFrom(logStart));
  const rc = printReport();
  try { await db.end(); await ctl.end(); } catch (_) {}
  process.exit(rc);
})().catch((e) => { console.error('fuzz aborted: ' + (e.stack || e)); process.exit(2); });
