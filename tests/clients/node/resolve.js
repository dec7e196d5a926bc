// Resolves names through Node's dns module (c-ares) against one server and
// prints what it got in a form tests/integration/clients.rs parses.
//
//   usage: node resolve.js HOST:PORT QUERY...
//   QUERY: srv:NAME | a:NAME | aaaa:NAME
//
// Output, one line each, QUERY and a value separated by a tab:
//   QUERY<TAB>0 10 8001 target     an SRV record (priority weight port name)
//   QUERY<TAB>10.0.0.5             an address
//   QUERY<TAB>!ERROR CODE          the lookup failed (ENOTFOUND, ENODATA, ...)
//   QUERY<TAB>#done                the query is finished
'use strict';

const dns = require('node:dns');

async function main() {
  const [server, ...queries] = process.argv.slice(2);
  if (!server || queries.length === 0) {
    console.error('usage: node resolve.js HOST:PORT QUERY...');
    process.exit(2);
  }
  // One try of 5 s: a lost datagram fails the test instead of slowing it.
  const resolver = new dns.promises.Resolver({ timeout: 5000, tries: 2 });
  resolver.setServers([server]);
  const out = [];
  for (const query of queries) {
    const colon = query.indexOf(':');
    const kind = query.slice(0, colon);
    const name = query.slice(colon + 1);
    try {
      if (kind === 'srv') {
        for (const r of await resolver.resolveSrv(name)) {
          out.push(`${query}\t${r.priority} ${r.weight} ${r.port} ${r.name}`);
        }
      } else if (kind === 'a') {
        for (const a of await resolver.resolve4(name)) out.push(`${query}\t${a}`);
      } else if (kind === 'aaaa') {
        for (const a of await resolver.resolve6(name)) out.push(`${query}\t${a}`);
      } else {
        out.push(`${query}\t!ERROR bad query kind ${kind}`);
      }
    } catch (err) {
      out.push(`${query}\t!ERROR ${err.code || err.message}`);
    }
    out.push(`${query}\t#done`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

main();
