#!/usr/bin/env node
// prm's reference webhook: Twilio posts inbound messages and delivery
// statuses here; prm checks Twilio's signature (prm.verify_twilio_signature,
// under the clinic's stored auth token) and does everything else.
//
//   POST /twilio/inbound   Twilio's "a message comes in" webhook (SMS, WhatsApp): TwiML reply
//   POST /twilio/status?org=<id>   a message's StatusCallback (the sender adds org): 204
//
// A request whose X-Twilio-Signature is missing or wrong gets 403 and
// reaches nothing.  The connection comes from libpq's variables (PGHOST,
// PGPORT, PGDATABASE, PGUSER, PGPASSWORD or DATABASE_URL), best a role with
// prm's webhook level.  PORT (8080; 0: any free port), HOST (127.0.0.1),
// PRM_PUBLIC_URL: the base URL Twilio is configured with, as Twilio signs it
// (e.g. https://hooks.clinic.example behind a proxy; default http://HOST:PORT).
'use strict';
const http = require('node:http');
const { Pool } = require('pg');

const env = process.env;
const host = env.HOST || '127.0.0.1';
const port = Number(env.PORT ?? 8080);
const MAX_BODY = 256 * 1024;     // what verify_twilio_signature takes
const pool = new Pool(env.DATABASE_URL ? { connectionString: env.DATABASE_URL, max: 5 } : { max: 5 });
let publicUrl = env.PRM_PUBLIC_URL;

const log = (line) => process.stdout.write(`webhook: ${line}\n`);
const xml = (s) => s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' }[c]));
const twiml = (reply) => '<?xml version="1.0" encoding="UTF-8"?>\n' +
  (reply == null ? '<Response/>' : `<Response><Message>${xml(reply)}</Message></Response>`);

// prm's SQLSTATEs as HTTP answers (README, Errors)
function statusOf(e) {
  if (e.code === '42501') return 403;                    // not this role's organization
  if (e.code === 'P0002') return 404;                    // a number no organization owns
  if (/^22/.test(e.code || '')) return 400;              // malformed or oversized input
  return 500;                                            // 55000: no stored auth token, or worse
}

// The form as verify_twilio_signature wants it: every value a string, a name
// given more than once an array of its values.
function formParams(body) {
  const params = {};
  for (const [k, v] of new URLSearchParams(body)) {
    if (!(k in params)) params[k] = v;
    else params[k] = [].concat(params[k], v);
  }
  return params;
}

const one = (v) => (Array.isArray(v) ? v[0] : v) ?? null;

async function handle(req, body) {
  if (req.method !== 'POST') return [405, 'text/plain', 'POST only\n'];
  const path = req.url.split('?')[0];
  if (path !== '/twilio/inbound' && path !== '/twilio/status') return [404, 'text/plain', 'not found\n'];
  const p = formParams(body);
  // whose token: the organization owning To (inbound), or the callback URL's org (a status names the patient as To)
  const org = path === '/twilio/status' ? new URL(req.url, 'http://x').searchParams.get('org') : null;
  if (path === '/twilio/status' && !/^[1-9][0-9]{0,17}$/.test(org || ''))
    return [400, 'text/plain', 'a status callback URL needs ?org=<organization id>\n'];
  const { rows: [check] } = await pool.query('SELECT prm.verify_twilio_signature($1, $2::jsonb, $3, $4) AS ok',
                                              [publicUrl + req.url, JSON.stringify(p), req.headers['x-twilio-signature'] ?? null, org]);
  if (!check.ok) return [403, 'text/plain', 'bad signature\n'];
  if (path === '/twilio/status') {
    await pool.query('SELECT prm.record_delivery_status($1, $2)', [one(p.MessageSid), one(p.MessageStatus)]);
    return [204, 'text/plain', ''];
  }
  const to = one(p.To) || '';
  const { rows: [r] } = await pool.query('SELECT prm.handle_inbound_message($1, $2, $3, $4, $5) AS reply',
                                          [to.startsWith('whatsapp:') ? 'whatsapp' : 'sms', to, one(p.From), one(p.Body) ?? '', one(p.MessageSid)]);
  return [200, 'text/xml', twiml(r.reply)];
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
  });
  req.on('end', async () => {
    let answer;
    try {
      answer = size > MAX_BODY ? [413, 'text/plain', 'request too large\n']
                               : await handle(req, Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      const code = statusOf(e);     // prm's message for what the caller sent; the log for the rest
      answer = [code, 'text/plain', code < 500 ? `${e.message}\n` : 'internal error\n'];
      if (code >= 500) log(`${req.url}: ${e.code || ''} ${e.message}`);
    }
    const [code, type, text] = answer;
    log(`${req.method} ${req.url} ${code}${code >= 400 ? `: ${text.trim()}` : ''}`);
    res.writeHead(code, { 'Content-Type': type }).end(text);
  });
});

server.listen(port, host, () => {
  const url = `http://${host}:${server.address().port}`;
  publicUrl = (publicUrl || url).replace(/\/+$/, '');
  log(`listening on ${url} (signed as ${publicUrl})`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => pool.end()));
