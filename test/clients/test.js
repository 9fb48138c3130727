#!/usr/bin/env node
// The reference clients (clients/) against a real prm: the sender claims,
// sends through the fake (console) adapter and through the twilio adapter to
// a stand-in of Twilio's API, acknowledges and reports status, woken by
// NOTIFY; the webhook takes an inbound message with a good signature and
// refuses a bad one with 403.  Each client runs as a child process under a
// role that has only its prm level (sender, webhook).  Prints TAP.
// Run by test/clients/run.sh (PGDATABASE: a fresh database, as a superuser).
'use strict';
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Client } = require(path.join(__dirname, '../../clients/node_modules/pg'));
const twilio = require('./twilio');

const CLIENTS = path.join(__dirname, '../../clients');
const TOKEN = 'test-auth-token-0123456789abcdef';
const CLINIC = '+61290000001';
const ROLE_PASSWORD = 'clients-test';
let n = 0, failed = 0;
function ok(cond, name, detail) {
  n++;
  console.log(`${cond ? '' : 'not '}ok ${n} - ${name}`);
  if (!cond) { failed++; if (detail !== undefined) console.log(`# ${JSON.stringify(detail)}`); }
}

// a client as a child process; .out collects its stdout, .waitFor(re) waits
// (bounded: a failure, not a threshold) until a line matches
function start(script, args, env) {
  const child = spawn(process.execPath, [path.join(CLIENTS, script), ...args], {
    env: { ...process.env, PGPASSWORD: ROLE_PASSWORD, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.out = '';
  child.stdout.on('data', (d) => { child.out += d; });
  child.stderr.on('data', (d) => { child.out += d; });
  child.done = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  child.waitFor = async (re, seconds = 30) => {
    for (let i = 0; i < seconds * 10; i++) {
      const m = re.exec(child.out);
      if (m) return m;
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return null;
  };
  return child;
}

async function main() {
  const db = new Client();
  await db.connect();
  const q = async (sql, params) => (await db.query(sql, params)).rows;
  const one = async (sql, params) => (await q(sql, params))[0];

  await q('SET client_min_messages = warning');
  await q('CREATE EXTENSION IF NOT EXISTS prm CASCADE');
  const { org } = await one(`SELECT prm.create_organization('Client Clinic', 'Australia/Sydney', $1) AS org`, [CLINIC]);
  await q(`SELECT prm.configure($1, '{"phone_region": "AU", "quiet_hours": false}')`, [org]);
  const { ann, bob, cy } = await one(`SELECT prm.add_patient($1, 'Ann', 'Lee', '0412 345 678') AS ann,
                                             prm.add_patient($1, 'Bob', 'Ng', '0413 222 333') AS bob,
                                             prm.add_patient($1, 'Cy', 'Ho', '0414 000 111') AS cy`, [org]);
  await q('SELECT prm.set_channel_credential($1, $2, $3)', [org, 'twilio', TOKEN]);
  // the clients' roles: each only its prm level (cluster-wide names, made once)
  const roles = { sender: 'prm_clients_sender', webhook: 'prm_clients_webhook' };
  for (const [level, role] of Object.entries(roles)) {
    await q(`DO $$ BEGIN CREATE ROLE ${role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await q(`ALTER ROLE ${role} PASSWORD '${ROLE_PASSWORD}'`);
    await q('SELECT prm.grant_access($1, $2, $3)', [role, org, level]);
  }
  const enqueue = async (to, body, patient) =>
    (await one('SELECT prm.enqueue_message($1, $2, $3, $4, $5) AS id', [org, 'sms', to, body, patient])).id;
  const message = (id) => one(`SELECT status, provider_message_id AS pmid, attempts, last_error, lease_token
                                 FROM prm.outbound_message WHERE id = $1`, [id]);

  // 1. sender --once, fake adapter: what is due is claimed, sent, acknowledged, delivered
  const ids = [await enqueue('+61412345678', 'Reminder one', ann), await enqueue('+61413222333', 'Reminder two', bob),
               await enqueue('+61414000111', 'Reminder three', cy)];
  let s = start('sender.js', ['--once'], { PGUSER: roles.sender, PRM_PROVIDER: 'console', PRM_BATCH: '2' });
  ok(await s.done === 0, 'sender --once (console adapter) exits 0', s.out);
  ok(/3 claimed, 3 sent, 0 not sent/.test(s.out), 'it claimed three messages (in batches of two) and sent three', s.out);
  ok(/-> sms \+61413222333: Reminder two/.test(s.out), 'the fake adapter received the message with its address and body', s.out);
  for (const id of ids) {
    const m = await message(id);
    ok(m.status === 'delivered' && m.pmid === `FAKE${id}` && m.attempts === 1,
       `message ${id}: acknowledged with the adapter's id, its status reported (delivered), one attempt`, m);
  }
  s = start('sender.js', ['--once'], { PGUSER: roles.sender });
  ok(await s.done === 0 && /0 claimed, 0 sent/.test(s.out), 'a second run finds nothing due', s.out);

  // 2. sender listening: a new message wakes it by NOTIFY (no poll for an hour)
  s = start('sender.js', [], { PGUSER: roles.sender, PRM_POLL_SECONDS: '3600' });
  ok(await s.waitFor(/listening on prm_outbox_sms, provider console/) !== null, 'the sender LISTENs on prm_outbox_sms', s.out);
  const late = await enqueue('+61412345678', 'Your appointment moved', ann);
  ok(await s.waitFor(new RegExp(`#${late} sms to \\+61412345678 sent as FAKE${late}`)) !== null,
     'a message queued while it listens is sent, woken by NOTIFY', s.out);
  ok((await message(late)).status === 'delivered', 'and acknowledged as delivered');
  s.kill('SIGTERM');
  ok(await s.done === 0, 'the sender stops cleanly on SIGTERM', s.out);

  // 3. sender --once, twilio adapter against a stand-in of the Messages API
  const api = await twilio.fakeMessagesApi((form, i) =>
    form.To === '+61413222333' ? [503, { code: 20500, message: 'Service unavailable' }]
    : form.To === '+61414000111' ? [400, { code: 21211, message: "The 'To' number is not valid" }]
    : [201, { sid: `SM${String(i).padStart(32, '0')}`, status: 'queued' }]);
  const [good, busy, bad] = [await enqueue('+61412345678', 'Via Twilio', ann), await enqueue('+61413222333', 'Busy carrier', bob),
                             await enqueue('+61414000111', 'Bad number', cy)];
  s = start('sender.js', ['--once'], { PGUSER: roles.sender, PRM_PROVIDER: 'twilio', TWILIO_BASE_URL: api.url,
                                       TWILIO_ACCOUNT_SID: 'ACtest', TWILIO_AUTH_TOKEN: 'api-secret', TWILIO_FROM: CLINIC,
                                       TWILIO_STATUS_CALLBACK: 'https://hooks.example/twilio/status' });
  ok(await s.done === 0 && /3 claimed, 1 sent, 2 not sent/.test(s.out), 'sender --once (twilio adapter): three claimed, one sent', s.out);
  const r = api.requests.find((x) => x.form.To === '+61412345678');
  ok(r && r.method === 'POST' && r.path === '/2010-04-01/Accounts/ACtest/Messages.json', 'it POSTs to the account\'s Messages.json', r);
  ok(r && r.authorization === 'Basic ' + Buffer.from('ACtest:api-secret').toString('base64'), 'with Basic auth of the account sid and token', r);
  ok(r && r.form.From === CLINIC && r.form.Body === 'Via Twilio' && r.form.StatusCallback === `https://hooks.example/twilio/status?org=${org}`,
     'the form has From, Body and StatusCallback (naming the organization)', r);
  const mg = await message(good);
  ok(mg.status === 'sent' && /^SM0+1$/.test(mg.pmid), 'the accepted message is sent under Twilio\'s sid (Twilio said queued: no status reported)', mg);
  const mb = await message(busy);
  ok(mb.status === 'queued' && mb.attempts === 1 && /503/.test(mb.last_error), 'a 503 is retryable: queued again for later, error kept', mb);
  const md = await message(bad);
  ok(md.status === 'dead' && /21211/.test(md.last_error), 'a 400 is final: the message is dead', md);
  api.server.close();

  // 4. the webhook, as its role, on a free port
  const w = start('webhook.js', [], { PGUSER: roles.webhook, PORT: '0' });
  const up = await w.waitFor(/listening on (http:\/\/\S+)/);
  ok(up !== null, 'the webhook listens', w.out);
  const base = up ? up[1] : 'http://127.0.0.1:1';
  const inbound = (body, sid) => twilio.inboundParams(CLINIC, '+61412345678', body, sid);
  const stored = async (sid) => (await one('SELECT count(*)::int AS n FROM prm.inbound_message WHERE provider_message_id = $1', [sid])).n;

  let res = await twilio.post(base, '/twilio/inbound', inbound('HELP', 'SMgood1'), TOKEN);
  ok(res.status === 200 && /^text\/xml/.test(res.type), 'a signed inbound message gets 200 text/xml', res);
  ok(/Reply STOP to opt out/.test(twilio.twimlReply(res.text) || ''), 'the TwiML answer carries prm\'s reply (HELP)', res);
  ok(await stored('SMgood1') === 1, 'prm recorded the inbound message');
  res = await twilio.post(base, '/twilio/inbound', inbound('HELP', 'SMgood1'), TOKEN);
  ok(res.status === 200 && await stored('SMgood1') === 1, 'Twilio\'s retry of it is answered and recorded once', res);

  res = await twilio.post(base, '/twilio/inbound', inbound('STOP', 'SMforged'), 'not-the-token');
  ok(res.status === 403, 'a signature under another token gets 403', res);
  res = await twilio.post(base, '/twilio/inbound', inbound('STOP', 'SMunsigned'), TOKEN, null);
  ok(res.status === 403, 'a request without X-Twilio-Signature gets 403', res);
  const p = inbound('STOP', 'SMtampered');
  const sig = twilio.sign(TOKEN, `${base}/twilio/inbound`, p);
  res = await twilio.post(base, '/twilio/inbound', { ...p, Body: 'YES' }, TOKEN, sig);
  ok(res.status === 403, 'a signed request whose body was changed gets 403', res);
  res = await twilio.post(base, '/twilio/inbound?x=1', p, TOKEN, sig);
  ok(res.status === 403, 'a signature for another URL gets 403', res);
  ok(await stored('SMforged') + await stored('SMunsigned') + await stored('SMtampered') === 0, 'none of the refused requests reached prm');
  const optedOut = await one('SELECT count(*)::int AS n FROM prm.patient WHERE id = $1 AND sms_opt_out', [ann]).catch(() => ({ n: 0 }));
  ok(optedOut.n === 0, 'the forged STOP did not opt the patient out', optedOut);

  // a status callback as Twilio sends it: To is the patient, the organization is in the URL
  const status = { MessageSid: mg.pmid, MessageStatus: 'delivered', AccountSid: 'ACtest', To: '+61412345678', From: CLINIC };
  res = await twilio.post(base, `/twilio/status?org=${org}`, status, 'not-the-token');
  ok(res.status === 403 && (await message(good)).status === 'sent', 'a forged delivery status gets 403 and changes nothing', res);
  res = await twilio.post(base, '/twilio/status', status, TOKEN);
  ok(res.status === 400 && (await message(good)).status === 'sent', 'a status callback URL without ?org= gets 400', res);
  res = await twilio.post(base, `/twilio/status?org=${org}`, status, TOKEN);
  ok(res.status === 204 && (await message(good)).status === 'delivered', 'a signed status callback records delivered', res);
  const other = await one(`SELECT prm.create_organization('Other Clinic', 'UTC', '+61290000002') AS id`);
  await q('SELECT prm.set_channel_credential($1, $2, $3)', [other.id, 'twilio', TOKEN]);
  res = await twilio.post(base, `/twilio/status?org=${other.id}`, { ...status, MessageStatus: 'read' }, TOKEN);
  ok(res.status === 403 && (await message(good)).status === 'delivered', 'another clinic\'s org in the URL gets 403 (the role has no level there)', res);

  res = await twilio.post(base, '/twilio/inbound', { ...inbound('HELP', 'SMnobody'), To: '+61290009999' }, TOKEN);
  ok(res.status === 404, 'a number no clinic owns gets 404', res);
  res = await fetch(`${base}/twilio/inbound`);
  ok(res.status === 405, 'GET gets 405');
  w.kill('SIGTERM');
  ok(await w.done === 0, 'the webhook stops cleanly on SIGTERM', w.out);

  await q('SELECT prm.revoke_access($1, $2)', [roles.sender, org]);
  await q('SELECT prm.revoke_access($1, $2)', [roles.webhook, org]);
  await db.end();
  console.log(`1..${n}`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.log(`not ok ${n + 1} - the test ran to its end`); console.log(`# ${e.stack}`); console.log(`1..${n + 1}`); process.exit(1); });
