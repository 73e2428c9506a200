// A Node service for the TLS tests, built-in modules only: node links OpenSSL statically and
// feeds it through memory BIOs, unlike libssl users.
//   node node_tls.js --port P [--cert PEM] [--downstream https://127.0.0.1:Q]
// With --cert it serves HTTPS, else HTTP. With --downstream each request makes one HTTPS call
// there (certificate not checked: the tests use a self-signed one) and answers with its body.
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
const port = Number(args.port);
const downstream = args.downstream;

function handler(req, res) {
  if (!downstream) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, path: req.url }));
    return;
  }
  https
    .get(`${downstream}/item${req.url}`, { rejectUnauthorized: false }, (answer) => {
      let body = '';
      answer.on('data', (chunk) => (body += chunk));
      answer.on('end', () => {
        res.writeHead(answer.statusCode, { 'content-type': 'application/json' });
        res.end(body);
      });
    })
    .on('error', (err) => {
      res.writeHead(502);
      res.end(String(err));
    });
}

let server;
if (args.cert) {
  const pem = fs.readFileSync(args.cert);
  server = https.createServer({ key: pem, cert: pem }, handler);
} else {
  server = http.createServer(handler);
}
server.listen(port, '127.0.0.1', () => console.log('ready'));
