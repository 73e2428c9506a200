// Helpers shared by the Express apps (server.js, chain.js): command-line arguments and a GET
// over one keep-alive agent that resolves with the status code once the body is read.
'use strict';

const http = require('http');

// `--name value`; exits with a message when it is missing and there is no fallback.
function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 && fallback !== undefined) {
    return fallback;
  }
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const keepAlive = new http.Agent({ keepAlive: true });

function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: keepAlive }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    }).on('error', reject);
  });
}

module.exports = { arg, get, keepAlive };
