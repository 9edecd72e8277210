// The package around the module: its type declarations name exactly the
// module's exports, and the demo's static server serves the module safely.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import * as sm from '../signal-manager.js';
import { startStaticServer } from '../serve.mjs';

test('signal-manager.d.ts declares every export and nothing else', () => {
  const dts = readFileSync(new URL('../signal-manager.d.ts', import.meta.url), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(sm).sort());
});

test('signal-manager.js has no imports', () => {
  const src = readFileSync(new URL('../signal-manager.js', import.meta.url), 'utf8');
  assert.doesNotMatch(src, /^\s*import\s/m);
  assert.doesNotMatch(src, /\brequire\(/);
});

function get(url, path) {
  // A raw path, so that ../ is not normalised away by the URL parser.
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], location: res.headers.location, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('serve.mjs serves the module and the demo, and nothing outside clients/js', async (t) => {
  const server = await startStaticServer({ port: 0 });
  t.after(() => server.close());
  const mod = await get(server.url, '/signal-manager.js');
  assert.equal(mod.status, 200);
  assert.match(mod.type, /^text\/javascript/);
  assert.equal(mod.body, readFileSync(new URL('../signal-manager.js', import.meta.url), 'utf8'));
  const demo = await get(server.url, '/demo/');
  assert.equal(demo.status, 200);
  assert.match(demo.type, /^text\/html/);
  assert.match(demo.body, /<script type="module" src="demo.js">/);
  const redirect = await get(server.url, '/demo');
  assert.equal(redirect.status, 301);
  assert.equal(redirect.location, '/demo/');
  assert.equal((await get(server.url, '/nope.js')).status, 404);
  for (const evil of ['/../package.json', '/..%2f..%2fCargo.toml', '/demo/../../../Cargo.toml', '/%2e%2e/%2e%2e/Cargo.toml']) {
    const r = await get(server.url, evil);
    assert.ok(r.status === 400 || r.status === 404, `${evil} gave ${r.status}`);
    assert.doesNotMatch(r.body, /\[package\]|"name"/);
  }
});
