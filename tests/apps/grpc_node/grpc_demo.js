// The demo.Greeter gRPC service of tests/apps/grpc_demo.py with @grpc/grpc-js: methods by
// name, raw bytes, no generated code. `serve PORT` runs the server ("ready" once listening);
// `call PORT` makes the same calls as grpc_demo.py's `call` ("done" once they succeeded);
// `call-split PORT` calls in rounds around the agent's attach (see `callSplit`); `front PORT
// GRPC_PORT` is an HTTP/1 service calling it (see `front`).
'use strict';

const grpc = require('@grpc/grpc-js');

const SERVICE = 'demo.Greeter';
const raw = (x) => x;

function method(name, responseStream) {
  return {
    path: `/${SERVICE}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  };
}

const definition = { Fail: method('Fail', false), Slow: method('Slow', false), Stream: method('Stream', true) };
for (let i = 0; i < 16; i++) definition[`Call${i}`] = method(`Call${i}`, false);

function serve(port) {
  const handlers = {
    Fail: (call, done) => done({ code: grpc.status.NOT_FOUND, details: 'no such greeting' }),
    Slow: (call, done) => {
      const timer = setTimeout(() => done(null, call.request), 1000);
      call.on('cancelled', () => clearTimeout(timer));
    },
    Stream: (call) => {
      for (let i = 0; i < 3; i++) call.write(Buffer.from(`part ${i}`));
      call.end();
    },
  };
  for (let i = 0; i < 16; i++) handlers[`Call${i}`] = (call, done) => done(null, call.request);
  const server = new grpc.Server();
  server.addService(definition, handlers);
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
    console.log('ready');
  });
}

function unary(client, name, timeoutMs, request) {
  return new Promise((resolve, reject) => {
    const m = definition[name];
    const deadline = new Date(Date.now() + timeoutMs);
    client.makeUnaryRequest(m.path, raw, raw, request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

async function call(port) {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) => client.waitForReady(new Date(Date.now() + 10000), (e) => (e ? reject(e) : resolve())));
  const replies = await Promise.all([...Array(16).keys()].map((i) => unary(client, `Call${i}`, 10000, Buffer.from(`id ${i}`))));
  replies.forEach((r, i) => {
    if (r.toString() !== `id ${i}`) throw new Error(`Call${i}: ${r}`);
  });
  await unary(client, 'Fail', 10000, Buffer.from('x')).then(
    () => { throw new Error('Fail did not fail'); },
    (e) => { if (e.code !== grpc.status.NOT_FOUND) throw e; },
  );
  const parts = await new Promise((resolve, reject) => {
    const got = [];
    const stream = client.makeServerStreamRequest(definition.Stream.path, raw, raw, Buffer.from('x'), { deadline: new Date(Date.now() + 10000) });
    stream.on('data', (d) => got.push(d));
    stream.on('end', () => resolve(got));
    stream.on('error', reject);
  });
  if (parts.length !== 3) throw new Error(`Stream: ${parts.length} parts`);
  await unary(client, 'Slow', 300, Buffer.from('x')).then(
    () => { throw new Error('Slow did not time out'); },
    (e) => { if (e.code !== grpc.status.DEADLINE_EXCEEDED) throw e; },
  );
  client.close();
  console.log('done');
}

// Calls on one channel in rounds, each round started by a line on stdin (the agent attaches
// before the first): Call0..Call3 before, then Call0..Call7 per round (four paths the
// connection has sent before the agent attached, four new). Prints a line after each round.
async function callSplit(port) {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) => client.waitForReady(new Date(Date.now() + 10000), (e) => (e ? reject(e) : resolve())));
  for (let i = 0; i < 4; i++) await unary(client, `Call${i}`, 10000, Buffer.from('before'));
  console.log('half');
  const lines = require('readline').createInterface({ input: process.stdin });
  let round = 0;
  for await (const _ of lines) {
    for (let i = 0; i < 8; i++) await unary(client, `Call${i}`, 10000, Buffer.from(`round ${round}`));
    round += 1;
    console.log(`round ${round}`);
    if (round === 2) break;
  }
  lines.close();
  client.close();
  console.log('done');
}

// An HTTP/1 service whose GET /chain/<n> calls Call<n mod 16> on the gRPC server at grpcPort
// over one shared client.
function front(port, grpcPort) {
  const http = require('http');
  const client = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  http
    .createServer((req, res) => {
      const n = Number(req.url.split('/').pop());
      unary(client, `Call${n % 16}`, 10000, Buffer.from(`id ${n}`)).then(
        (reply) => res.end(reply),
        (e) => {
          res.statusCode = 502;
          res.end(String(e));
        },
      );
    })
    .listen(port, '127.0.0.1', () => console.log('ready'));
}

const [mode, port, grpcPort] = process.argv.slice(2);
const modes = { serve, call, 'call-split': callSplit, front: (p) => front(p, grpcPort) };
if (!modes[mode] || !port) {
  console.error('usage: grpc_demo.js serve|call|call-split PORT | front PORT GRPC_PORT');
  process.exit(2);
}
Promise.resolve(modes[mode](port)).catch((e) => {
  console.error(e);
  process.exit(1);
});
