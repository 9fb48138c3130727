#!/usr/bin/env node
// prm's reference sender: LISTEN on the outbox channel, claim due messages,
// hand each to a provider adapter, acknowledge, report what the provider said.
// prm does the queueing, leases, retries with backoff, quiet hours and dead
// letters; the sender only moves messages to the provider.
//
//   node sender.js [--once]     (--once or PRM_ONCE=1: send what is due, then exit)
//
// The connection comes from libpq's variables (PGHOST, PGPORT, PGDATABASE,
// PGUSER, PGPASSWORD or DATABASE_URL), best a role with prm's sender level.
// PRM_CHANNEL (sms), PRM_BATCH (10), PRM_LEASE_SECONDS (60), PRM_POLL_SECONDS
// (30: a claim also runs this often without a notification), PRM_PROVIDER and
// its variables: see adapters.js.
'use strict';
const { Client } = require('pg');
const { adapterFromEnv } = require('./adapters');

const env = process.env;
const channel = env.PRM_CHANNEL || 'sms';
const batch = Number(env.PRM_BATCH || 10);
const lease = `${Number(env.PRM_LEASE_SECONDS || 60)} seconds`;
const pollMs = Number(env.PRM_POLL_SECONDS || 30) * 1000;
const once = process.argv.includes('--once') || env.PRM_ONCE === '1';
// statuses past "sent" that a provider may already know when it answers
const FINAL = new Set(['delivered', 'undelivered', 'failed', 'read']);

const log = (line) => process.stdout.write(`sender: ${line}\n`);

// One message: send, then acknowledge under the claim's lease.  A refused
// acknowledgement (the lease ran out and another sender has it) is logged.
async function deliver(db, adapter, m) {
  let sent;
  try {
    sent = await adapter.send(m);
  } catch (e) {
    const retryable = e.retryable !== false;
    await db.query('SELECT prm.mark_message_failed($1, $2, $3, $4)',
                   [m.id, String(e.message).slice(0, 1000), retryable, m.lease_token]);
    log(`#${m.id} failed (${retryable ? 'will retry' : 'final'}): ${e.message}`);
    return false;
  }
  await db.query('SELECT prm.mark_message_sent($1, $2, $3)', [m.id, sent.id, m.lease_token]);
  if (FINAL.has(sent.status))
    await db.query('SELECT prm.record_delivery_status($1, $2)', [sent.id, sent.status]);
  log(`#${m.id} ${m.channel} to ${m.to_address} sent as ${sent.id} (${sent.status})`);
  return true;
}

// Claim and send until nothing is due.
async function drain(db, adapter) {
  let claimed = 0, sent = 0;
  for (;;) {
    const { rows } = await db.query('SELECT org_id, id, channel, to_address, body, lease_token FROM prm.claim_messages($1, $2, $3)',
                                    [channel, batch, lease]);
    claimed += rows.length;
    for (const m of rows) {
      try {
        if (await deliver(db, adapter, m)) sent++;
      } catch (e) {  // prm refused the acknowledgement (e.g. 55000, the lease was lost)
        log(`#${m.id} not acknowledged: ${e.message}`);
      }
    }
    if (rows.length < batch) break;
  }
  if (claimed > 0 || once) log(`${claimed} claimed, ${sent} sent, ${claimed - sent} not sent`);
}

async function main() {
  const adapter = adapterFromEnv(env);
  if (!/^[a-z]+$/.test(channel)) throw new Error(`PRM_CHANNEL "${channel}" is not a channel name`);
  const db = new Client(env.DATABASE_URL ? { connectionString: env.DATABASE_URL } : {});
  db.on('error', (e) => { log(`connection lost: ${e.message}`); process.exit(1); });
  await db.connect();
  if (once) {
    await drain(db, adapter);
    return db.end();
  }
  // a notification (or the poll timer) wakes the loop; notifications that
  // arrive while it drains are folded into one more round
  let wake = null, pending = true, stopping = false;
  const poke = () => { pending = true; if (wake) wake(); };
  db.on('notification', poke);
  await db.query(`LISTEN "prm_outbox_${channel}"`);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { stopping = true; poke(); });
  log(`listening on prm_outbox_${channel}, provider ${adapter.name}`);
  while (!stopping) {
    if (!pending) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, pollMs);
        wake = () => { clearTimeout(timer); resolve(); };
      });
      wake = null;
    }
    pending = false;
    if (!stopping) await drain(db, adapter);
  }
  await db.end();
}

main().catch((e) => { log(`error: ${e.message}`); process.exit(1); });
