// Reference Express service for `zerotrace compare`, run under the OpenTelemetry Node agent:
//
//   node --require @opentelemetry/auto-instrumentations-node/register server.js \
//     --port 8001 --downstream http://127.0.0.1:8002 --pg-port 5432 --redis-port 6379
//
// GET /merchant/:id/status calls GET <downstream>/item/:id with node's http module, runs one
// PostgreSQL query (pg pool, database `shop`, table `items`) and one Redis GET (ioredis), then
// answers 200. Prints "ready <port>" once listening. SIGINT closes the server and the
// connections; the event loop then drains and the agent flushes its spans on 'beforeExit'.
'use strict';

const { arg, get, keepAlive } = require('./common');
const express = require('express');
const { Pool } = require('pg');
const Redis = require('ioredis');


const port = Number(arg('port'));
const downstream = arg('downstream');
// node-postgres's own default pool size (10) unless --pg-pool says otherwise: a pool smaller
// than the concurrency hands freed clients to queued queries (tests/tests/compare.rs).
const pool = new Pool({ host: '127.0.0.1', port: Number(arg('pg-port')), user: 'postgres', database: 'shop', max: Number(arg('pg-pool', '10')) });
const redis = new Redis({ host: '127.0.0.1', port: Number(arg('redis-port')) });


const app = express();
app.get('/merchant/:id/status', async (req, res, next) => {
  try {
    const id = Number(req.params.id);
    const status = await get(`${downstream}/item/${id}`);
    const { rows } = await pool.query('SELECT name FROM items WHERE id = $1', [id]);
    await redis.get(`merchant:${id}`);
    res.send(`merchant ${id}: downstream ${status}, ${rows.length} row(s)\n`);
  } catch (err) {
    next(err);
  }
});
app.get('/health', (req, res) => res.send('ok\n'));

const server = app.listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
process.on('SIGINT', () => {
  server.close();
  server.closeAllConnections();
  keepAlive.destroy();
  redis.quit().catch(() => {});
  pool.end().catch(() => {});
});
