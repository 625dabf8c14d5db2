/**
 * The null ext_authz server: grpc-js, the same protos and server options as tollgate, answers every
 * Check with OK at once (unless NULL_CHECKS_PER_TURN is set, below). The floor for any Node.js
 * ext_authz server; tollgate's numbers are reported as ratios to it. Also serves the ext_proc Process
 * stream (the `settle` workload's response phase: every message decoded and dropped, the stream ended
 * when the client half-closes), grpc.health.v1 and GET /readyz so it is started like tollgate.
 *   TOLLGATE_GRPC_PORT, TOLLGATE_HTTP_PORT
 */
import { createServer } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { loadExtProcPackages } from '../src/authz/grpc/ext-proc-protos.js';
import { HealthService } from '../src/authz/grpc/health.js';
import { loadGrpcPackages } from '../src/authz/grpc/protos.js';
import { TurnPacer } from '../src/decision/pacer.js';

const pk = loadGrpcPackages();
const server = new grpc.Server({
  'grpc.max_receive_message_length': 8 * 1024 * 1024 + 1024 * 1024,
  'grpc.max_send_message_length': 4 * 1024 * 1024,
  'grpc.max_concurrent_streams': 128,
});
const OK = { status: { code: 0 }, ok_response: {} };
// NULL_CHECKS_PER_TURN (default 0, answer at once): pace the answers of a burst like tollgate's
// server.checks_per_turn, to see how much of a closed-loop difference is scheduling, not CPU.
const perTurn = Number(process.env.NULL_CHECKS_PER_TURN ?? 0);
const pacer = new TurnPacer();
server.addService(pk.authorization, {
  Check: (_call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
    const wait = pacer.enter(perTurn);
    if (wait) void wait.then(() => cb(null, OK));
    else cb(null, OK);
  },
});
server.addService(loadExtProcPackages().externalProcessor, {
  Process: (call: grpc.ServerDuplexStream<any, any>) => {
    call.on('data', () => {});
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
});
const health = new HealthService();
server.addService(pk.health, health.handlers());
server.bindAsync(
  `127.0.0.1:${process.env.TOLLGATE_GRPC_PORT ?? 9191}`,
  grpc.ServerCredentials.createInsecure(),
  (err) => {
    if (err) throw err;
    health.set('', 'SERVING');
    createServer((req, res) => {
      res.writeHead(req.url === '/readyz' ? 200 : 404).end();
    }).listen(Number(process.env.TOLLGATE_HTTP_PORT ?? 8181), '127.0.0.1');
  },
);
process.on('SIGTERM', () => process.exit(0));
