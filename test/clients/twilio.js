#!/usr/bin/env node
// Twilio, played for the client tests and make demo: its webhook signature,
// a signed POST of an inbound message to the webhook, and a stand-in of its
// Messages API for the sender's twilio adapter.
//
//   node twilio.js inbound [--as NAME] [--bad-signature] TO FROM BODY SID
//     POSTs to $WEBHOOK_URL/twilio/inbound, signed with $TWILIO_AUTH_TOKEN
//     (or forged), and prints the HTTP status and the TwiML answer's reply.
'use strict';
const crypto = require('node:crypto');
const http = require('node:http');

// X-Twilio-Signature: base64 HMAC-SHA1 under the auth token of the URL,
// then each parameter, by name, as name followed by value
function sign(token, url, params) {
  const data = Object.keys(params).sort().reduce((s, k) => s + k + params[k], url);
  return crypto.createHmac('sha1', token).update(data, 'utf8').digest('base64');
}

// POST a form to base + path, signed for that URL (signature: override)
async function post(base, path, params, token, signature) {
  const url = base.replace(/\/+$/, '') + path;
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  const sig = signature === undefined ? sign(token, url, params) : signature;
  if (sig !== null) headers['X-Twilio-Signature'] = sig;
  const res = await fetch(url, { method: 'POST', headers, body: new URLSearchParams(params) });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

// the parameters Twilio sends with an inbound SMS
function inboundParams(to, from, body, sid) {
  return { ToCountry: 'AU', To: to, From: from, Body: body, MessageSid: sid, SmsMessageSid: sid,
           AccountSid: 'ACdemo', NumMedia: '0', NumSegments: '1', SmsStatus: 'received', ApiVersion: '2010-04-01' };
}

// the reply text of a TwiML answer, or null
function twimlReply(text) {
  const m = /<Message>([\s\S]*)<\/Message>/.exec(text);
  return m ? m[1].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&') : null;
}

// A stand-in of the Messages API: answer(form) returns [status, json]; every
// request is kept in .requests ({ path, authorization, form }).
function fakeMessagesApi(answer) {
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const form = Object.fromEntries(new URLSearchParams(body));
      requests.push({ method: req.method, path: req.url, authorization: req.headers.authorization, form });
      const [status, json] = answer(form, requests.length);
      res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(json));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () =>
    resolve({ server, requests, url: `http://127.0.0.1:${server.address().port}` })));
}

module.exports = { sign, post, inboundParams, twimlReply, fakeMessagesApi };

if (require.main === module) {
  const args = process.argv.slice(2);
  const take = (flag) => { const i = args.indexOf(flag); return i < 0 ? undefined : args.splice(i, flag === '--as' ? 2 : 1)[1] ?? true; };
  const who = take('--as'), bad = take('--bad-signature') !== undefined;
  const [cmd, to, from, body, sid] = args;
  if (cmd !== 'inbound' || !sid) {
    console.error('usage: twilio.js inbound [--as NAME] [--bad-signature] TO FROM BODY SID');
    process.exit(2);
  }
  post(process.env.WEBHOOK_URL, '/twilio/inbound', inboundParams(to, from, body, sid),
       process.env.TWILIO_AUTH_TOKEN, bad ? sign('not-the-token', process.env.WEBHOOK_URL, {}) : undefined)
    .then((r) => {
      const reply = r.status === 200 ? twimlReply(r.text) : null;
      const answer = reply !== null ? JSON.stringify(reply) : r.status === 200 ? '(no reply)' : r.text.trim();
      console.log(`  ${who ? `${who} (${from})` : from}: ${JSON.stringify(body)}${bad ? ' (forged signature)' : ''}  ->  HTTP ${r.status} ${answer}`);
    })
    .catch((e) => { console.error(`twilio.js: ${e.message}`); process.exit(1); });
}
