// Pinpoint's template helpers for handlebars.js 4.x, written from Pinpoint's helper page
// (shared/reference/pinpoint-helpers.md restates it). This is the reference the Rust
// implementation is checked against: generate.js renders every case with it.
'use strict';
const crypto = require('crypto');

class HelperError extends Error {}
const fail = (m) => { throw new HelperError(m); };

const isMissing = (v) => v === undefined || v === null;
const WS = /^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g;
const trim = (s) => s.replace(WS, '');

function printed(v) {
  if (isMissing(v)) return '';
  if (Array.isArray(v)) return v.map(printed).join(',');
  if (typeof v === 'object') return '[object Object]';
  return String(v);
}
const blank = (v) => trim(printed(v)) === '';
function truthy(v) {
  if (isMissing(v) || v === false || v === '' || v === 0 || Number.isNaN(v)) return false;
  if (Array.isArray(v)) return v.length > 0;
  return true;
}
const NUMERIC = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
function numeric(v) {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string' || Array.isArray(v)) {
    const t = trim(printed(v));
    if (NUMERIC.test(t)) { const n = Number(t); return Number.isFinite(n) ? n : undefined; }
  }
  return undefined;
}
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
function equal(a, b) {
  if (isMissing(a) && isMissing(b)) return true;
  if (isMissing(a) || isMissing(b)) return false;
  if (isObj(a) || isObj(b)) return a === b;
  if (typeof a === 'number' || typeof b === 'number') {
    const x = numeric(a), y = numeric(b);
    if (x !== undefined && y !== undefined) return x === y;
  }
  return printed(a) === printed(b);
}
function cmpCodePoints(a, b) {
  const x = Array.from(a), y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return x.length === y.length ? 0 : (x.length < y.length ? -1 : 1);
}
function order(a, b) {
  if (isMissing(a) || isMissing(b) || isObj(a) || isObj(b)) return undefined;
  const x = numeric(a), y = numeric(b);
  if (x !== undefined && y !== undefined) return x < y ? -1 : (x > y ? 1 : 0);
  return cmpCodePoints(printed(a), printed(b));
}
function integer(v, what) {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  const t = trim(printed(v));
  if (/^[+-]?\d+$/.test(t)) return parseInt(t, 10);
  return fail(`${what} must be an integer`);
}
const len = (s) => Array.from(s).length;

function split(args) { const options = args[args.length - 1]; return [args.slice(0, -1), options]; }
function arity(name, params, lo, hi = lo) {
  if (params.length < lo || params.length > hi) fail(`${name} takes ${lo}..${hi} arguments, not ${params.length}`);
}
// A bare word: a simple path that resolved to nothing stands for its own text.
function bareAt(options, i, value) {
  if (!isMissing(value)) return value;
  const ids = options.ids;
  const path = ids && ids[i];
  if (typeof path === 'string' && !/[.\[@]/.test(path) && !path.startsWith('this') && !path.startsWith('../')) return path;
  return value;
}
function bareHash(options, key) {
  const v = options.hash[key];
  if (!isMissing(v)) return v;
  const ids = options.hashIds;
  const path = ids && ids[key];
  if (typeof path === 'string' && !/[.\[@]/.test(path) && !path.startsWith('this') && !path.startsWith('../')) return path;
  return v;
}

function conditional(name, test) {
  return function (...args) {
    const [params, options] = split(args);
    const holds = test(name, params, options);
    if (options.fn) return holds ? options.fn(this) : options.inverse(this);
    if (holds) return isMissing(options.hash.yes) ? true : options.hash.yes;
    return isMissing(options.hash.no) ? false : options.hash.no;
  };
}
const binary = (f) => (name, p) => { arity(name, p, 2); return f(p[0], p[1]); };
const many = (f) => (name, p) => { if (p.length < 2) fail(`${name} takes at least 2 arguments`); return f(p.map(truthy)); };

function justify(align) {
  return function (...args) {
    const [p, o] = split(args);
    arity('justify', p, 1, 2);
    if (isMissing(p[0])) return '';
    let width = p.length > 1 ? p[1] : o.hash.size;
    if (isMissing(width)) fail('needs a width');
    width = integer(width, 'width');
    if (width < 0) fail('negative width');
    const s = printed(p[0]); const l = len(s);
    if (l >= width) return s;
    let pad = isMissing(o.hash.pad) ? ' ' : printed(o.hash.pad); if (pad === '') pad = ' ';
    const padChars = Array.from(pad);
    const run = (n) => { let r = ''; for (let i = 0; i < n; i++) r += padChars[i % padChars.length]; return r; };
    const total = width - l;
    const [left, right] = align === 'center' ? [Math.floor(total / 2), total - Math.floor(total / 2)] : (align === 'left' ? [0, total] : [total, 0]);
    return run(left) + s + run(right);
  };
}

function mathResult(x) {
  if (!Number.isFinite(x)) fail('not finite');
  let t = (Math.sign(x) * Math.round(Math.abs(x) * 1e8) / 1e8).toFixed(8).replace(/\.?0+$/, '');
  if (t === '-0') t = '0';
  return Number(t);
}
function math(n, f) {
  return function (...args) {
    const [p] = split(args);
    arity('math', p, n);
    let anyBlank = false; const ops = [];
    for (const v of p) {
      if (blank(v)) { anyBlank = true; continue; }
      const x = numeric(v); if (x === undefined) fail('not a number'); ops.push(x);
    }
    if (anyBlank) return '';
    return mathResult(f(ops));
  };
}
function stringArg(args) { const [p] = split(args); arity('string', p, 1); return isMissing(p[0]) ? undefined : printed(p[0]); }
const hash = (alg) => (...args) => { const s = stringArg(args); return s === undefined ? '' : crypto.createHash(alg).update(s, 'utf8').digest('hex'); };

// ---- dates ----
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const STYLES = { full: 'EEEE, MMMM d, y', long: 'MMMM d, y', medium: 'MMM d, y', short: 'M/d/yy' };
function zone(v) {
  if (blank(v)) return 'UTC';
  const name = trim(printed(v));
  try { return new Intl.DateTimeFormat('en-US', { timeZone: name }).resolvedOptions().timeZone; } catch (e) { return fail(`unknown zone ${name}`); }
}
// Wall-clock fields of an instant (ms) in a zone, and its offset in seconds.
function fieldsAt(ms, tz) {
  const f = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric', weekday: 'short' });
  const parts = {}; for (const x of f.formatToParts(new Date(ms))) parts[x.type] = x.value;
  const y = Number(parts.year), mo = Number(parts.month), d = Number(parts.day), h = Number(parts.hour) % 24, mi = Number(parts.minute), s = Number(parts.second);
  const asUtc = Date.UTC(y, mo - 1, d, h, mi, s);
  const offset = Math.round((asUtc - (ms - ((ms % 1000) + 1000) % 1000)) / 1000);
  return { y, mo, d, h, mi, s, ms: ((ms % 1000) + 1000) % 1000, offset, dow: new Date(Date.UTC(y, mo - 1, d)).getUTCDay() };
}
function wallToInstant(y, mo, d, h, mi, s, ms, tz) {
  const guess = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  const candidates = [];
  for (const probe of [guess - 86400000, guess, guess + 86400000]) {
    const off = fieldsAt(probe, tz).offset;
    const t = guess - off * 1000;
    const f = fieldsAt(t, tz);
    if (f.y === y && f.mo === mo && f.d === d && f.h === h && f.mi === mi && f.s === s) candidates.push(t);
  }
  if (candidates.length) return Math.min(...candidates);
  // In a gap: read the wall time with the offset before the gap.
  const before = fieldsAt(guess - 3 * 3600000, tz).offset;
  return guess - before * 1000;
}
function tokens(p) {
  const out = []; let i = 0; const c = Array.from(p);
  while (i < c.length) {
    if (c[i] === "'") {
      if (c[i + 1] === "'") { out.push({ lit: "'" }); i += 2; continue; }
      let lit = ''; i++;
      for (;;) {
        if (i >= c.length) fail('unterminated quote');
        if (c[i] === "'" && c[i + 1] === "'") { lit += "'"; i += 2; continue; }
        if (c[i] === "'") { i++; break; }
        lit += c[i++];
      }
      out.push({ lit });
    } else if (/[A-Za-z]/.test(c[i])) {
      let n = 1; while (c[i + n] === c[i]) n++;
      out.push({ f: c[i], n }); i += n;
    } else { out.push({ lit: c[i] }); i++; }
  }
  return out;
}
const pad = (n, w) => (n < 0 ? '-' + String(-n).padStart(w, '0') : String(n).padStart(w, '0'));
function usWeek(y, mo, d) {
  const day = Date.UTC(y, mo - 1, d); const dow = new Date(day).getUTCDay();
  const end = new Date(day + (6 - dow) * 86400000);
  if (end.getUTCFullYear() > y) return [y + 1, 1];
  const jan1 = Date.UTC(y, 0, 1); const off = new Date(jan1).getUTCDay();
  const ordinal0 = Math.round((day - jan1) / 86400000);
  return [y, Math.floor((ordinal0 + off) / 7) + 1];
}
function offsetText(secs, colon, minutes) {
  const sign = secs < 0 ? '-' : '+'; const a = Math.abs(secs);
  const h = String(Math.floor(a / 3600)).padStart(2, '0'), m = String(Math.floor((a % 3600) / 60)).padStart(2, '0');
  return minutes ? (colon ? `${sign}${h}:${m}` : `${sign}${h}${m}`) : `${sign}${h}`;
}
function formatDate(ms, tz, pattern) {
  const t = fieldsAt(ms, tz); let out = '';
  for (const tok of tokens(pattern)) {
    if (tok.lit !== undefined) { out += tok.lit; continue; }
    const { f, n } = tok;
    switch (f) {
      case 'G': out += t.y > 0 ? 'AD' : 'BC'; break;
      case 'y': case 'Y': { const y = f === 'Y' ? usWeek(t.y, t.mo, t.d)[0] : t.y; out += n === 2 ? pad(((y % 100) + 100) % 100, 2) : pad(y, n); break; }
      case 'M': case 'L': out += n <= 2 ? pad(t.mo, n) : (n === 3 ? MONTHS[t.mo - 1].slice(0, 3) : MONTHS[t.mo - 1]); break;
      case 'd': out += pad(t.d, n); break;
      case 'D': out += pad(Math.round((Date.UTC(t.y, t.mo - 1, t.d) - Date.UTC(t.y, 0, 1)) / 86400000) + 1, n); break;
      case 'F': out += pad(Math.floor((t.d - 1) / 7) + 1, n); break;
      case 'w': out += pad(usWeek(t.y, t.mo, t.d)[1], n); break;
      case 'W': { const first = new Date(Date.UTC(t.y, t.mo - 1, 1)).getUTCDay(); out += pad(Math.floor((t.d - 1 + first) / 7) + 1, n); break; }
      case 'E': out += n <= 3 ? DAYS[t.dow].slice(0, 3) : DAYS[t.dow]; break;
      case 'u': out += pad(t.dow === 0 ? 7 : t.dow, n); break;
      case 'a': out += t.h < 12 ? 'AM' : 'PM'; break;
      case 'H': out += pad(t.h, n); break;
      case 'k': out += pad(t.h === 0 ? 24 : t.h, n); break;
      case 'K': out += pad(t.h % 12, n); break;
      case 'h': out += pad(t.h % 12 === 0 ? 12 : t.h % 12, n); break;
      case 'm': out += pad(t.mi, n); break;
      case 's': out += pad(t.s, n); break;
      case 'S': out += pad(t.ms, n); break;
      case 'Z': out += offsetText(t.offset, false, true); break;
      case 'X': if (n >= 4) fail('X'); out += t.offset === 0 ? 'Z' : offsetText(t.offset, n === 3, n >= 2); break;
      default: fail(`letter ${f}`);
    }
  }
  return out;
}
function parseOffset(s) {
  if (s.startsWith('Z')) return [0, 1];
  let base = 0, rest = s;
  if (/^(UTC|GMT)/i.test(s)) { base = 3; rest = s.slice(3); }
  const sign = rest[0] === '+' ? 1 : (rest[0] === '-' ? -1 : 0);
  if (!sign) return base === 3 ? [0, 3] : undefined;
  const m = /^[\d:]*/.exec(rest.slice(1))[0];
  let h, mi, used;
  if (m.includes(':')) { const [a, b] = m.split(':'); if (b.length !== 2 || !a.length || a.length > 2) return undefined; h = +a; mi = +b; used = a.length + 3; }
  else if (m.length === 1 && base === 3) { h = +m; mi = 0; used = 1; }
  else if (m.length === 2) { h = +m; mi = 0; used = 2; }
  else if (m.length === 3 && base === 3) { h = +m.slice(0, 1); mi = +m.slice(1); used = 3; }
  else if (m.length >= 4) { h = +m.slice(0, 2); mi = +m.slice(2, 4); used = 4; }
  else return undefined;
  if (h > 23 || mi > 59) return undefined;
  return [sign * (h * 3600 + mi * 60), base + 1 + used];
}
function validDate(y, mo, d) { const t = new Date(Date.UTC(y, mo - 1, d)); return t.getUTCFullYear() === y && t.getUTCMonth() === mo - 1 && t.getUTCDate() === d; }
function parseIso(s, tz) {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(.*))?$/.exec(s);
  if (!m) fail('not ISO 8601');
  const [y, mo, d] = [+m[1], +m[2], +m[3]];
  if (!validDate(y, mo, d)) fail('no such date');
  if (m[4] === undefined) return wallToInstant(y, mo, d, 0, 0, 0, 0, tz);
  const h = +m[4], mi = +m[5], sec = m[6] ? +m[6] : 0, ms = m[7] ? +m[7].slice(0, 3).padEnd(3, '0') : 0;
  if (h > 23 || mi > 59 || sec > 59) fail('no such time');
  const rest = m[8] || '';
  if (rest === '') return wallToInstant(y, mo, d, h, mi, sec, ms, tz);
  if (/^[UGug]/.test(rest)) fail('bad offset');
  const o = parseOffset(rest); if (!o || o[1] !== rest.length) fail('bad offset');
  return Date.UTC(y, mo - 1, d, h, mi, sec, ms) - o[0] * 1000;
}
const NUMERIC_FIELD = (t) => t && t.f && ('ydHkKhmsS'.includes(t.f) || ('ML'.includes(t.f) && t.n <= 2));
function parsePattern(input, pattern, tz) {
  const toks = tokens(pattern);
  let year = 1970, month = 1, day = 1, hour = 0, minute = 0, second = 0, milli = 0, twoDigit = false, pm, twelve = false, offset;
  let rest = input;
  toks.forEach((t, i) => {
    if (t.lit !== undefined) { if (!rest.startsWith(t.lit)) fail('literal'); rest = rest.slice(t.lit.length); return; }
    if (NUMERIC_FIELD(t)) {
      const avail = /^\d*/.exec(rest)[0].length;
      const take = NUMERIC_FIELD(toks[i + 1]) ? t.n : avail;
      if (take === 0 || avail < take) fail('digits');
      const v = parseInt(rest.slice(0, take), 10); rest = rest.slice(take);
      switch (t.f) {
        case 'y': year = v; twoDigit = take === 2 && t.n <= 2; break;
        case 'M': case 'L': month = v; break;
        case 'd': day = v; break;
        case 'H': hour = v; break;
        case 'k': hour = v === 24 ? 0 : v; break;
        case 'K': hour = v; twelve = true; break;
        case 'h': hour = v === 12 ? 0 : v; twelve = true; break;
        case 'm': minute = v; break;
        case 's': second = v; break;
        default: milli = v;
      }
      return;
    }
    switch (t.f) {
      case 'M': case 'L': {
        const idx = MONTHS.findIndex((m) => rest.slice(0, m.length).toLowerCase() === m.toLowerCase());
        const idx3 = MONTHS.findIndex((m) => rest.slice(0, 3).toLowerCase() === m.slice(0, 3).toLowerCase());
        if (idx >= 0) { month = idx + 1; rest = rest.slice(MONTHS[idx].length); } else if (idx3 >= 0) { month = idx3 + 1; rest = rest.slice(3); } else fail('month');
        break;
      }
      case 'E': {
        const idx = DAYS.findIndex((d) => rest.slice(0, d.length).toLowerCase() === d.toLowerCase());
        const idx3 = DAYS.findIndex((d) => rest.slice(0, 3).toLowerCase() === d.slice(0, 3).toLowerCase());
        if (idx >= 0) rest = rest.slice(DAYS[idx].length); else if (idx3 >= 0) rest = rest.slice(3); else fail('day');
        break;
      }
      case 'a': { const mk = rest.slice(0, 2).toUpperCase(); if (mk === 'AM') pm = false; else if (mk === 'PM') pm = true; else fail('am/pm'); rest = rest.slice(2); break; }
      case 'G': if (!rest.startsWith('AD')) fail('era'); rest = rest.slice(2); break;
      case 'z': case 'Z': case 'X': { const o = parseOffset(rest); if (!o) fail('offset'); offset = o[0]; rest = rest.slice(o[1]); break; }
      default: fail(`letter ${t.f}`);
    }
  });
  if (rest !== '') fail('left over');
  if (twelve && pm === true) hour += 12;
  if (twoDigit) {
    const nowYear = fieldsAt(Date.now(), tz).y; const base = nowYear - 80;
    let y = base - (((base % 100) + 100) % 100) + year; if (y < base) y += 100; year = y;
  }
  if (!validDate(year, month, day) || hour > 23 || minute > 59 || second > 59 || milli > 999) fail('no such date');
  if (offset !== undefined) return Date.UTC(year, month - 1, day, hour, minute, second, milli) - offset * 1000;
  return wallToInstant(year, month, day, hour, minute, second, milli, tz);
}
function outputPattern(v) { const p = printed(v); if (trim(p) === '') return STYLES.medium; return STYLES[trim(p)] || p; }
const firstPresent = (vs) => vs.find((v) => !blank(v));

function register(Handlebars) {
  const h = (name, f) => Handlebars.registerHelper(name, f);
  h('if', conditional('if', (n, p, o) => { arity(n, p, 1); return truthy(p[0]) || (truthy(o.hash.includeZero) && p[0] === 0); }));
  const builtinIf = Handlebars.helpers['if'];
  h('unless', function (v, options) {
    if (arguments.length !== 2) fail('unless takes one argument');
    if (!options.fn) fail('unless is a block helper');
    return builtinIf.call(this, v, { fn: options.inverse, inverse: options.fn, hash: options.hash });
  });
  h('eq', conditional('eq', binary(equal)));
  h('neq', conditional('neq', binary((a, b) => !equal(a, b))));
  h('gt', conditional('gt', binary((a, b) => order(a, b) === 1)));
  h('gte', conditional('gte', binary((a, b) => { const o = order(a, b); return o === 1 || o === 0; })));
  h('lt', conditional('lt', binary((a, b) => order(a, b) === -1)));
  h('lte', conditional('lte', binary((a, b) => { const o = order(a, b); return o === -1 || o === 0; })));
  h('and', conditional('and', many((ts) => ts.every(Boolean))));
  h('or', conditional('or', many((ts) => ts.some(Boolean))));
  h('not', conditional('not', (n, p) => { arity(n, p, 1); return !truthy(p[0]); }));
  h('each', function (context, options) {
    if (arguments.length !== 2) fail('each takes one argument');
    const fn = options.fn, inverse = options.inverse;
    let items = [];
    if (Array.isArray(context)) items = context.slice(0, 15).map((v, i) => [i, v]);
    else if (isObj(context)) items = Object.keys(context).slice(0, 15).map((k) => [k, context[k]]);
    if (!items.length) return inverse(this);
    let out = '';
    items.forEach(([key, value], i) => {
      const data = Handlebars.createFrame(options.data || {});
      data.index = i; data.first = i === 0; data.last = i === items.length - 1;
      if (!Array.isArray(context)) data.key = key;
      out += fn(value, { data, blockParams: [value, key] });
    });
    return out;
  });

  h('abbreviate', (...a) => { const [p] = split(a); arity('abbreviate', p, 2); if (isMissing(p[0])) return ''; const w = integer(p[1], 'width'); if (w < 4) fail('width'); const s = Array.from(printed(p[0])); return s.length <= w ? s.join('') : s.slice(0, w - 3).join('') + '...'; });
  h('capitalize', (...a) => { const s = stringArg(a); if (s === undefined) return ''; let out = '', start = true; for (const c of s) { out += start && !/[ \t\n\v\f\r]/.test(c) ? c.toUpperCase() : c; start = /[ \t\n\v\f\r]/.test(c); } return out; });
  h('capitalizeFirst', (...a) => { const s = stringArg(a); if (s === undefined) return ''; const c = Array.from(s); return c.length ? c[0].toUpperCase() + c.slice(1).join('') : ''; });
  h('center', justify('center')); h('ljust', justify('left')); h('rjust', justify('right'));
  h('cut', (...a) => { const [p] = split(a); arity('cut', p, 1, 2); if (isMissing(p[0])) return ''; const t = p.length > 1 ? printed(p[1]) : ' '; const s = printed(p[0]); return t === '' ? s : s.split(t).join(''); });
  h('inflect', (...a) => {
    const [p, o] = split(a); arity('inflect', p, 3);
    if (blank(p[0])) return '';
    const n = numeric(p[0]); if (n === undefined) fail('count');
    const word = printed(n === 1 ? bareAt(o, 1, p[1]) : bareAt(o, 2, p[2]));
    const inc = o.hash.includeCount === true || printed(o.hash.includeCount) === 'true';
    return inc ? `${trim(printed(p[0]))} ${word}` : word;
  });
  h('join', (...a) => {
    const [p, o] = split(a); if (p.length < 2) fail('join');
    const first = p[0];
    if (isMissing(first) || first === '' || (Array.isArray(first) && first.length === 0)) return '';
    const joined = Array.isArray(first) ? first.map(printed).join(printed(p[1])) : p.slice(0, -1).map(printed).join(printed(p[p.length - 1]));
    return printed(o.hash.prefix) + joined + printed(o.hash.suffix);
  });
  h('lower', (...a) => { const s = stringArg(a); return s === undefined ? '' : s.toLowerCase(); });
  h('upper', (...a) => { const s = stringArg(a); return s === undefined ? '' : s.toUpperCase(); });
  h('ordinalize', (...a) => { const [p] = split(a); arity('ordinalize', p, 1); if (blank(p[0])) return ''; const n = integer(p[0], 'n'); const m = Math.abs(n); const sfx = (m % 100 >= 11 && m % 100 <= 13) ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' }[m % 10] || 'th'); return `${n}${sfx}`; });
  h('replace', (...a) => { const [p] = split(a); arity('replace', p, 3); if (isMissing(p[0])) return ''; const t = printed(p[1]); const s = printed(p[0]); return t === '' ? s : s.split(t).join(printed(p[2])); });
  h('slugify', (...a) => { const s = stringArg(a); if (s === undefined) return ''; return Array.from(s).filter((c) => /[\p{L}\p{N}_\-\s]/u.test(c)).join('').trim().toLowerCase().replace(/[-\s]+/gu, '-'); });
  h('stripTags', (...a) => { const s = stringArg(a); return s === undefined ? '' : s.replace(/<[^>]*>/g, ''); });
  h('substring', (...a) => { const [p] = split(a); arity('substring', p, 2, 3); if (isMissing(p[0])) return ''; const c = Array.from(printed(p[0])); const st = integer(p[1], 'start'); const en = p.length > 2 ? integer(p[2], 'end') : c.length; if (st < 0 || en < 0) fail('negative'); const s = Math.min(st, c.length), e = Math.min(en, c.length); return e <= s ? '' : c.slice(s, e).join(''); });
  h('yesno', (...a) => {
    const [p, o] = split(a); arity('yesno', p, 1);
    const pick = (k) => (isMissing(o.hash[k]) ? k : printed(o.hash[k]));
    if (p[0] === true) return pick('yes'); if (p[0] === false) return pick('no');
    if (blank(p[0])) return pick('maybe');
    const t = trim(printed(p[0])).toLowerCase();
    if (t === 'true') return pick('yes'); if (t === 'false') return pick('no');
    return fail('yesno');
  });

  h('add', math(2, (o) => o[0] + o[1])); h('subtract', math(2, (o) => o[0] - o[1])); h('multiply', math(2, (o) => o[0] * o[1]));
  h('divide', math(2, (o) => (o[1] === 0 ? fail('divide by zero') : o[0] / o[1])));
  h('modulo', math(2, (o) => (o[1] === 0 ? fail('modulo by zero') : o[0] % o[1])));
  h('ceiling', math(1, (o) => Math.ceil(o[0]))); h('floor', math(1, (o) => Math.floor(o[0]))); h('round', math(1, (o) => Math.floor(o[0] + 0.5)));
  h('encode64', (...a) => { const s = stringArg(a); return s === undefined ? '' : Buffer.from(s, 'utf8').toString('base64'); });
  h('decode64', (...a) => {
    const s = stringArg(a); if (s === undefined) return '';
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 === 1) fail('base64');
    const body = s.replace(/=+$/, ''); const padN = s.length - body.length;
    if (padN > 0 && s.length % 4 !== 0) fail('padding');
    if (body.length % 4 === 1) fail('base64');
    return Buffer.from(body, 'base64').toString('utf8');
  });
  h('md5', hash('md5')); h('sha256', hash('sha256')); h('sha512', hash('sha512'));

  h('now', (...a) => { const [p, o] = split(a); arity('now', p, 0, 1); const tz = zone(bareHash(o, 'tz')); const pat = outputPattern(firstPresent([bareAt(o, 0, p[0]), bareHash(o, 'outputFormat'), bareHash(o, 'format')])); return formatDate(Date.now(), tz, pat); });
  h('dateFormat', (...a) => {
    const [p, o] = split(a); arity('dateFormat', p, 1, 2);
    if (blank(p[0])) return '';
    const tz = zone(bareHash(o, 'tz'));
    const pat = outputPattern(firstPresent([bareHash(o, 'outputFormat'), bareAt(o, 1, p[1]), bareHash(o, 'format')]));
    const inFmt = bareHash(o, 'inputFormat');
    let ms;
    if (typeof p[0] === 'number') ms = Math.trunc(p[0]);
    else {
      const s = trim(printed(p[0]));
      if (!blank(inFmt)) ms = parsePattern(s, printed(inFmt), tz);
      else if (/^-?\d+$/.test(s)) ms = Number(s);
      else ms = parseIso(s, tz);
    }
    return formatDate(ms, tz, pat);
  });
}

module.exports = { register, HelperError };
