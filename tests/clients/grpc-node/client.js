'use strict';
/*
 * A gRPC client (@grpc/grpc-js) with one channel, written the way a user
 * would write it, for rpcdns's end-to-end tests.
 *
 *   usage: node client.js --target TARGET [--calls N] [--interval-ms MS]
 *                         [--deadline-ms MS]
 *                         [--service-config-lookup default|on|off]
 *
 * TARGET is a gRPC target, e.g. dns://127.0.0.1:5353/sms.rpc.svc.local:8001
 * or dns:///sms.rpc.svc.local:8001. The channel has no load-balancing policy
 * and no default service config of its own: what the resolver returns
 * decides (pick_first when DNS gives no service config).
 *
 * DNS server in the authority: grpc-js only uses it with its "alternative
 * resolver" (environment variable GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true,
 * read when grpc-js is loaded). Without it grpc-js ignores the authority:
 * addresses come from dns.lookup() (getaddrinfo) and TXT from the servers
 * in /etc/resolv.conf. Run it with GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true
 * for a dns://HOST:PORT/... target, as a user must.
 *
 * --service-config-lookup: whether the DNS resolver looks up TXT service
 * config. "default" leaves the library's default (grpc-js: on), "on"/"off"
 * set the channel option grpc.service_config_disable_resolution to 0/1.
 * Note: grpc-js (1.14.3 and master) queries TXT at the host name itself
 * (sms.rpc.svc.local), not at _grpc_config.<host> as gRFC A2 says; rpcdns
 * serves the record at both.
 *
 * Makes N calls (0: until standard input ends or SIGTERM) one after another,
 * sleeping MS between them, each a unary call to /rpcdns.test.Who/Who with an
 * empty body (raw bytes, no protobuf, no codegen), the given deadline and
 * fail-fast semantics (no waitForReady).
 *
 * Output, tab-separated, each line written at once (ms since process start):
 *     START<TAB>ms
 *     CALL<TAB>ms<TAB>ok<TAB>instance id
 *     CALL<TAB>ms<TAB>err<TAB>STATUS_CODE_NAME: details
 *     DONE<TAB>ms
 * Exits 0 even when calls failed (the test judges); 2 for usage errors.
 *
 * Dependencies: package.json / package-lock.json beside this file
 * (@grpc/grpc-js pinned). Install them outside the source tree and point
 * NODE_PATH at them, e.g. from the repository root:
 *     mkdir -p target/clients/grpc-node
 *     cp tests/clients/grpc-node/package*.json target/clients/grpc-node/
 *     (cd target/clients/grpc-node && npm ci --ignore-scripts)
 *     NODE_PATH=$PWD/target/clients/grpc-node/node_modules \
 *       node tests/clients/grpc-node/client.js --target ...
 */

const T0 = process.hrtime.bigint();
const fs = require('fs');

const METHOD = '/rpcdns.test.Who/Who';
const LOOKUP_OPTION = 'grpc.service_config_disable_resolution';

function ms() {
  return Number((process.hrtime.bigint() - T0) / 1000000n);
}

function emit(...fields) {
  // Synchronous write to fd 1: the line is out before the next call starts,
  // whether stdout is a pipe, a file or a terminal.
  fs.writeSync(1, fields.join('\t') + '\n');
}

function oneLine(text) {
  return String(text).split(/\s+/).filter(Boolean).join(' ');
}

function usage(msg) {
  process.stderr.write(
    `client.js: ${msg}\n` +
      'usage: node client.js --target TARGET [--calls N] [--interval-ms MS] ' +
      '[--deadline-ms MS] [--service-config-lookup default|on|off]\n'
  );
  process.exit(2);
}

function parseArgs(argv) {
  const args = {
    target: null,
    calls: 1,
    intervalMs: 0,
    deadlineMs: 2000,
    serviceConfigLookup: 'default',
  };
  const names = {
    '--target': 'target',
    '--calls': 'calls',
    '--interval-ms': 'intervalMs',
    '--deadline-ms': 'deadlineMs',
    '--service-config-lookup': 'serviceConfigLookup',
  };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let value;
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    if (flag === '-h' || flag === '--help') {
      usage('help');
    }
    const key = names[flag];
    if (key === undefined) {
      usage(`unknown argument ${flag}`);
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) {
        usage(`${flag} needs a value`);
      }
      value = argv[++i];
    }
    if (key === 'target' || key === 'serviceConfigLookup') {
      args[key] = value;
    } else {
      if (!/^-?\d+$/.test(value)) {
        usage(`${flag} wants an integer, got ${value}`);
      }
      args[key] = parseInt(value, 10);
    }
  }
  if (!args.target) usage('--target is required');
  if (args.calls < 0) usage('--calls must be >= 0');
  if (args.intervalMs < 0) usage('--interval-ms must be >= 0');
  if (args.deadlineMs <= 0) usage('--deadline-ms must be > 0');
  if (!['default', 'on', 'off'].includes(args.serviceConfigLookup)) {
    usage('--service-config-lookup must be default, on or off');
  }
  return args;
}

function main() {
  const args = parseArgs(process.argv.slice(2));

  const grpc = require('@grpc/grpc-js');

  const options = {};
  if (args.serviceConfigLookup === 'on') {
    options[LOOKUP_OPTION] = 0;
  } else if (args.serviceConfigLookup === 'off') {
    options[LOOKUP_OPTION] = 1;
  }

  const client = new grpc.Client(
    args.target,
    grpc.credentials.createInsecure(),
    options
  );

  let stopped = false;
  let wake = null; // resolves the pending sleep early on stop
  const stop = () => {
    stopped = true;
    if (wake) wake();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (args.calls === 0) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  }

  const sleep = delay =>
    new Promise(resolve => {
      const t = setTimeout(done, delay);
      function done() {
        clearTimeout(t);
        wake = null;
        resolve();
      }
      wake = done;
    });

  const call = () =>
    new Promise(resolve => {
      const deadline = new Date(Date.now() + args.deadlineMs);
      client.makeUnaryRequest(
        METHOD,
        x => x,
        x => x,
        Buffer.alloc(0),
        new grpc.Metadata(),
        { deadline },
        (err, reply) => {
          if (err) {
            const name = grpc.status[err.code] ?? `CODE_${err.code}`;
            emit('CALL', ms(), 'err', `${name}: ${oneLine(err.details)}`);
          } else {
            emit('CALL', ms(), 'ok', Buffer.from(reply).toString('utf8'));
          }
          resolve();
        }
      );
    });

  (async () => {
    emit('START', ms());
    for (let n = 0; !stopped && (args.calls === 0 || n < args.calls); ) {
      if (n > 0 && args.intervalMs > 0) {
        await sleep(args.intervalMs);
        if (stopped) break;
      }
      n++;
      await call();
    }
    emit('DONE', ms());
    client.close();
    process.exit(0);
  })();
}

main();
