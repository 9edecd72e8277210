// Signaling checks of the deployment test, run from outside the containers
// with the project's JS client (clients/js/signal-manager.js) over the
// dependency-free WebSocket of clients/js/testing/ws.js:
//
//   1. alice on node1 and bob on node2 exchange an offer and an answer;
//   2. carol, through the load balancer, reaches a client on another node
//      and gets its answer;
//   3. node2 is stopped (the command in SM_STOP_NODE2, a JSON array): it must
//      exit 0, bob must get DISCONNECT SERVER_SHUTDOWN and reconnect through
//      the load balancer to another node, where alice's next offer reaches
//      him.
//
// Input (environment): SM_NODE1_URL, SM_NODE2_URL, SM_LB_URL, SM_TOKENS (JSON
// {alice, bob, carol}), SM_STOP_NODE2. Every wait is bounded; prints one
// "ok" line per check and exits non-zero on the first failure.
import { spawn } from 'node:child_process';
import { SignalManagerClient } from '../../clients/js/signal-manager.js';
import { NodeWebSocket } from '../../clients/js/testing/ws.js';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const node1 = env('SM_NODE1_URL');
const node2 = env('SM_NODE2_URL');
const lb = env('SM_LB_URL');
const tokens = JSON.parse(env('SM_TOKENS'));
const stopNode2 = JSON.parse(env('SM_STOP_NODE2'));

const clients = [];
function client() {
  const c = new SignalManagerClient({ WebSocket: NodeWebSocket, connectTimeoutMs: 10000, maxDelayMs: 2000 });
  clients.push(c);
  return c;
}

/** The next `type` event of `c` matching `pred`, or a rejection after `ms`. */
function nextEvent(c, type, ms, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const off = c.on(type, (d) => {
      if (!pred(d)) return;
      clearTimeout(timer);
      off();
      resolve(d);
    });
  });
}

function assert(cond, what) {
  if (!cond) throw new Error(what);
}

/** `from` offers to `to` (a client name), which answers; both must arrive. */
async function offerAnswer(from, fromName, to, toName) {
  const offerData = `v=0 offer ${fromName}->${toName} ${Date.now()}`;
  const gotOffer = nextEvent(to, 'offer', 10000, (d) => d.data === offerData);
  from.sendOffer(toName, offerData);
  const offer = await gotOffer;
  assert(offer.from === fromName, `offer from ${offer.from}, expected ${fromName}`);
  const answerData = `v=0 answer ${toName}->${fromName} ${Date.now()}`;
  const gotAnswer = nextEvent(from, 'answer', 10000, (d) => d.data === answerData);
  to.sendAnswer(fromName, answerData);
  const answer = await gotAnswer;
  assert(answer.from === toName, `answer from ${answer.from}, expected ${toName}`);
}

/** Runs a command; resolves with its exit code (output inherited). */
function run(argv, ms) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${argv.join(' ')} took over ${ms} ms`));
    }, ms);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

async function main() {
  const alice = client();
  const bob = client();
  const carol = client();

  const a = await alice.connect(node1, 'alice', tokens.alice);
  // bob reconnects to the next URL after the node that shut down: the LB.
  const b = await bob.connect([node2, lb], 'bob', tokens.bob);
  assert(a.nodeId === 'node1', `alice is on ${a.nodeId}, expected node1`);
  assert(b.nodeId === 'node2', `bob is on ${b.nodeId}, expected node2`);
  await offerAnswer(alice, 'alice', bob, 'bob');
  console.log('ok    offer and answer between node1 and node2');

  const c = await carol.connect(lb, 'carol', tokens.carol);
  const [peer, peerName] = c.nodeId === 'node1' ? [bob, 'bob'] : [alice, 'alice'];
  await offerAnswer(carol, 'carol', peer, peerName);
  console.log(`ok    through the load balancer (${c.nodeId}) to ${peerName} on another node`);

  const disconnected = nextEvent(bob, 'disconnect', 30000);
  const reconnected = nextEvent(bob, 'connected', 45000, (d) => d.reconnected);
  const code = await run(stopNode2, 60000);
  assert(code === 0, `stopping node2 exited ${code}`);
  const d = await disconnected;
  assert(d.reason === 'SERVER_SHUTDOWN', `bob got DISCONNECT ${d.reason}, expected SERVER_SHUTDOWN`);
  assert(d.willReconnect, 'bob will not reconnect after SERVER_SHUTDOWN');
  console.log('ok    node2 stopped (exit 0); its client got DISCONNECT SERVER_SHUTDOWN');
  const r = await reconnected;
  assert(r.url === lb, `bob reconnected to ${r.url}, expected the load balancer ${lb}`);
  assert(r.nodeId !== 'node2', 'bob reconnected to node2, which was stopped');
  await offerAnswer(alice, 'alice', bob, 'bob');
  console.log(`ok    bob reconnected through the load balancer to ${r.nodeId} and is reachable`);
}

main()
  .then(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    process.exit(0);
  })
  .catch((err) => {
    console.error(`FAIL  ${err.message}`);
    process.exit(1);
  });
