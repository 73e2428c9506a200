// Concurrency fidelity app (Node, libuv event loop): every request's outgoing calls carry the
// request's id, so a test can tell a right parent from a wrong one.
//
//   node chain.js --port 8001 --downstream http://127.0.0.1:8002 --pg-port 5432 --redis-port 6379
//                 [--pg-pool 32] [--mysql-port 3306]
//
// GET /chain/:id calls, one after the other (each after an `await` on the previous one):
//   GET <downstream>/item/:id with the http module (keep-alive agent),
//   GET <downstream>/item/:id with the global fetch (undici),
//   SELECT name FROM items WHERE id = <id>   (pg pool; the id is a literal in the text),
//   with --mysql-port: SELECT @chain_id = <id> on MariaDB (mysql2 pool),
//   GET chain:<id> on Redis (ioredis; Redis spans carry the command only),
// then answers 200. Prints "ready <port>" once listening. A pg pool smaller than the
// concurrency makes node-postgres hand freed clients to queued queries.
'use strict';

const { arg, get } = require('./common');
const express = require('express');
const { Pool } = require('pg');
const Redis = require('ioredis');
const mysql = require('mysql2/promise');


const port = Number(arg('port'));
const downstream = arg('downstream');
const pool = new Pool({ host: '127.0.0.1', port: Number(arg('pg-port')), user: 'postgres', database: 'shop', max: Number(arg('pg-pool', '32')) });
const redis = new Redis({ host: '127.0.0.1', port: Number(arg('redis-port')) });
const mysqlPort = arg('mysql-port', '');
const maria = mysqlPort ? mysql.createPool({ host: '127.0.0.1', port: Number(mysqlPort), user: 'root', database: 'shop', connectionLimit: 32 }) : null;


const app = express();
app.get('/chain/:id', async (req, res, next) => {
  try {
    const id = Number(req.params.id);
    const first = await get(`${downstream}/item/${id}`);
    const second = await fetch(`${downstream}/item/${id}`);
    await second.text();
    const { rows } = await pool.query(`SELECT name FROM items WHERE id = ${id}`);
    if (maria) {
      await maria.query(`SELECT @chain_id = ${id}`);
    }
    await redis.get(`chain:${id}`);
    res.send(`chain ${id}: ${first} ${second.status}, ${rows.length} row(s)\n`);
  } catch (err) {
    next(err);
  }
});

const server = app.listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
process.on('SIGINT', () => process.exit(0));
