// Renders every case in cases.json with handlebars.js 4.x and the Pinpoint helpers in
// helpers.js, and writes the results to tests/fixtures/render-cases.json, which the Rust
// test suite (tests/render_fixtures.rs) compares Herald's renderer against.
//
//   cd scripts/render-fixtures && npm ci && npm run generate
'use strict';
const fs = require('fs');
const path = require('path');
const Handlebars = require('handlebars');
const { register } = require('./helpers');

const hb = Handlebars.create();
register(hb);

// Default substitutions, as Pinpoint applies them before rendering: each default whose
// variable is absent, null or [] is stored at that path as a string (parents created).
function segments(p) {
  const out = []; let cur = ''; let lit = false;
  for (const c of p) {
    if (c === '[' && !lit && cur === '') lit = true;
    else if (c === ']' && lit) lit = false;
    else if (c === '.' && !lit) { out.push(cur); cur = ''; } else cur += c;
  }
  out.push(cur);
  return out.filter((s) => s !== '');
}
function applyDefault(root, p, value) {
  const segs = segments(p); let node = root;
  for (const s of segs.slice(0, -1)) {
    let next = node[s];
    if (Array.isArray(next)) { const o = {}; next.forEach((v, i) => { o[String(i)] = v; }); node[s] = o; next = o; }
    if (next === undefined || next === null || (Array.isArray(next) && next.length === 0)) { node[s] = {}; next = node[s]; }
    if (typeof next !== 'object') return;
    node = next;
  }
  const last = segs[segs.length - 1]; const cur = node[last];
  if (cur === undefined || cur === null || (Array.isArray(cur) && cur.length === 0)) node[last] = value;
}

const cases = JSON.parse(fs.readFileSync(path.join(__dirname, 'cases.json'), 'utf8'));
const results = cases.map((c) => {
  const ctx = JSON.parse(JSON.stringify(c.context || {}));
  for (const [k, v] of Object.entries(c.defaults || {})) applyDefault(ctx, k, v);
  try {
    const output = hb.compile(c.template, { trackIds: true })(ctx);
    return { ...c, output };
  } catch (e) {
    return { ...c, error: String(e.message).split('\n')[0] };
  }
});
const out = path.join(__dirname, '..', '..', 'tests', 'fixtures', 'render-cases.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ generator: `handlebars ${Handlebars.VERSION} with scripts/render-fixtures/helpers.js`, cases: results }, null, 1) + '\n');
console.log(`${results.length} cases (${results.filter((r) => r.error).length} errors) -> ${path.relative(process.cwd(), out)}`);
