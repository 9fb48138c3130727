// Provider adapters of the sender: send(message) resolves to
// { id, status } (the provider's message id and the status it reports) or
// throws an Error whose `retryable` says whether prm should try again.
'use strict';

// console: the fake provider.  Prints the message and "delivers" it at once,
// so a demo or a test sees the whole road without a carrier.
function consoleAdapter({ out = process.stdout } = {}) {
  return {
    name: 'console',
    async send(m) {
      out.write(`  -> ${m.channel} ${m.to_address}: ${m.body}\n`);
      return { id: `FAKE${m.id}`, status: 'delivered' };
    },
  };
}

// twilio: Twilio's Messages API, or anything shaped like it.  POSTs the form
// To / From / Body (and StatusCallback) to
// <base>/2010-04-01/Accounts/<sid>/Messages.json with Basic auth sid:token.
// The StatusCallback URL gets ?org=<the message's organization>: Twilio's
// status callback names the patient as To, so the webhook learns from its
// (signed) URL whose token signed it.
// Twilio answers 201 with { sid, status }.  429 and 5xx (and no answer) are
// worth a retry; any other refusal is final.
function twilioAdapter({ baseUrl = 'https://api.twilio.com', accountSid, authToken, from,
                         statusCallback, timeoutMs = 10000 }) {
  if (!accountSid || !authToken || !from)
    throw new Error('the twilio provider needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM');
  const url = `${baseUrl.replace(/\/+$/, '')}/2010-04-01/Accounts/${encodeURIComponent(accountSid)}/Messages.json`;
  const auth = 'Basic ' + Buffer.from(`${accountSid}:${authToken}`).toString('base64');
  return {
    name: 'twilio',
    async send(m) {
      // a WhatsApp message goes from the whatsapp: form of the number
      const sender = m.to_address.startsWith('whatsapp:') && !from.startsWith('whatsapp:') ? `whatsapp:${from}` : from;
      const form = new URLSearchParams({ To: m.to_address, From: sender, Body: m.body });
      if (statusCallback) {
        const cb = new URL(statusCallback);
        cb.searchParams.set('org', m.org_id);
        form.set('StatusCallback', cb.toString());
      }
      let res;
      try {
        res = await fetch(url, { method: 'POST', headers: { Authorization: auth }, body: form,
                                 signal: AbortSignal.timeout(timeoutMs) });
      } catch (e) {
        throw Object.assign(new Error(`provider unreachable: ${e.message}`), { retryable: true });
      }
      const answer = await res.json().catch(() => ({}));
      if (res.ok && answer.sid) return { id: answer.sid, status: answer.status || 'queued' };
      const err = new Error(`provider answered ${res.status}${answer.code ? ` (error ${answer.code})` : ''}: ${answer.message || res.statusText}`);
      err.retryable = res.status === 429 || res.status >= 500;
      throw err;
    },
  };
}

// the adapter the environment names (PRM_PROVIDER, default console)
function adapterFromEnv(env = process.env) {
  switch (env.PRM_PROVIDER || 'console') {
    case 'console':
      return consoleAdapter();
    case 'twilio':
      return twilioAdapter({
        baseUrl: env.TWILIO_BASE_URL, accountSid: env.TWILIO_ACCOUNT_SID, authToken: env.TWILIO_AUTH_TOKEN,
        from: env.TWILIO_FROM, statusCallback: env.TWILIO_STATUS_CALLBACK,
      });
    default:
      throw new Error(`PRM_PROVIDER "${env.PRM_PROVIDER}" is not known (console or twilio)`);
  }
}

module.exports = { consoleAdapter, twilioAdapter, adapterFromEnv };
