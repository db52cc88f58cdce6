import { re2Rejection } from '../xds/re2.js';
import { UnsupportedMatch } from './unsupported.js';

/**
 * Envoy's regexes are RE2; APISIX runs them with PCRE (lua-resty-expr's `~~` is `ngx.re.find` with
 * "jo", proxy-rewrite's `regex_uri` is `ngx.re.sub`). A pattern reaches APISIX only after RE2 has
 * accepted it (so no backreferences, lookaround or possessive quantifiers) and rewritten where the
 * two dialects read the same text differently:
 * - `$` outside multi-line mode is the end of the text in RE2, but also matches before a final
 *   newline in PCRE: it becomes `\z`;
 * - `\v` is the vertical tab in RE2, any vertical space in PCRE: `\x0B`; `\s` lacks the vertical
 *   tab in RE2, not in PCRE: spelled out;
 * - `{` that does not start a repetition is a literal in RE2 (`a{,2}`), PCRE2 10.43 reads some as
 *   one: escaped;
 * - `\Q…\E` is spelled out as escaped characters.
 * PCRE works on bytes here, RE2 on UTF-8 characters: a pattern with non-ASCII characters (or
 * escapes above U+007F) is refused, since `é+` or `[é]` would mean something else. On non-ASCII
 * input `.` and negated classes still count bytes, not characters (documented).
 *
 * Backtracking: PCRE backtracks, RE2 does not, so `(a+)+$` costs PCRE exponential time on a
 * hostile input. APISIX bounds every ngx.re call with `lua_regex_match_limit 100000` (its nginx.conf
 * template), 0.15–0.3 ms of CPU on the hostile input (measured with the APISIX 3.13 runtime,
 * scripts/regex-limit-check.lua; the PCRE default of 10 000 000 took 15–26 ms). A match that hits
 * the limit is an error, which `~~` reads as "no match"; negated conditions are written so that it
 * stays "no match" (see `notFullMatchRegex`).
 */
export function re2ToPcre(pattern: string): string {
  const refused = re2Rejection(pattern);
  if (refused) throw new UnsupportedMatch('invalid-regex', refused);
  if (/[^\x00-\x7f]/.test(pattern)) throw new UnsupportedMatch('regex-non-ascii', 'regexes with non-ASCII characters are not translated (PCRE matches bytes here, RE2 characters)');
  return new Rewriter(pattern).run();
}

/** A pattern for "the whole value matches" (Envoy's regex matchers are full matches). */
export function fullMatchRegex(pattern: string): string {
  return `^(?:${re2ToPcre(pattern)})\\z`;
}

/**
 * A pattern for "the whole value does not match", as a positive condition: with `!` in front of
 * `~~`, a match that PCRE gave up on (the match limit) would count as "does not match" and let the
 * route match; inside a negative lookahead it makes the condition false instead.
 */
export function notFullMatchRegex(pattern: string): string {
  return `^(?!(?:${re2ToPcre(pattern)})\\z)`;
}

const SPACE = '\\t\\n\\f\\r ';

class Rewriter {
  private i = 0;
  private out = '';
  private multiline = false;
  /** the multi-line flag of each open group, restored when it closes */
  private readonly groups: boolean[] = [];

  constructor(private readonly p: string) {}

  run(): string {
    while (this.i < this.p.length) {
      const c = this.p[this.i]!;
      if (c === '\\') this.escape(false);
      else if (c === '[') this.charClass();
      else if (c === '(') this.open();
      else if (c === ')') {
        this.multiline = this.groups.pop() ?? false;
        this.emit(c, 1);
      } else if (c === '$') this.emit(this.multiline ? '$' : '\\z', 1);
      else if (c === '{') {
        const repeat = /^\{\d+(?:,\d*)?\}/.exec(this.p.slice(this.i, this.i + 16));
        if (repeat) this.emit(repeat[0], repeat[0].length);
        else this.emit('\\{', 1);
      } else this.emit(c, 1);
    }
    return this.out;
  }

  private emit(text: string, consumed: number): void {
    this.out += text;
    this.i += consumed;
  }

  private open(): void {
    const flags = /^\(\?([imsU]*)(?:-([imsU]*))?(\)|:)/.exec(this.p.slice(this.i, this.i + 16));
    if (!flags) {
      this.groups.push(this.multiline);
      this.emit('(', 1);
      return;
    }
    const on = flags[1] ?? '';
    const off = flags[2] ?? '';
    if (flags[3] === ':') this.groups.push(this.multiline); // (?flags:…) scopes them to the group
    if (on.includes('m')) this.multiline = true;
    if (off.includes('m')) this.multiline = false;
    this.emit(flags[0], flags[0].length);
  }

  /** One escape; inside a class the expansions must be class members. */
  private escape(inClass: boolean): void {
    const next = this.p[this.i + 1] ?? '';
    if (next === 'Q') return this.quoted();
    if (next === 'v') return this.emit('\\x0B', 2);
    if (next === 's') return this.emit(inClass ? SPACE : `[${SPACE}]`, 2);
    if (next === 'S') {
      if (inClass) throw new UnsupportedMatch('regex-unsupported', '\\S inside a character class is not translated');
      return this.emit(`[^${SPACE}]`, 2);
    }
    if (next === 'x') {
      const braced = /^\\x\{([0-9a-fA-F]+)\}/.exec(this.p.slice(this.i, this.i + 16));
      const text = braced ? braced[0] : this.p.slice(this.i, this.i + 4);
      return this.emit(byteEscape(parseInt(braced ? braced[1]! : text.slice(2), 16)), text.length);
    }
    if (/[0-7]/.test(next)) {
      const octal = /^\\([0-7]{1,3})/.exec(this.p.slice(this.i, this.i + 4))!;
      return this.emit(byteEscape(parseInt(octal[1]!, 8)), octal[0].length);
    }
    if (next === 'p' || next === 'P') {
      const prop = /^\\[pP](\{[^}]*\}|.)/.exec(this.p.slice(this.i, this.i + 64));
      if (prop) return this.emit(prop[0], prop[0].length);
    }
    this.emit(`\\${next}`, 2);
  }

  /** \Q…\E: every character literal. */
  private quoted(): void {
    const end = this.p.indexOf('\\E', this.i + 2);
    const text = this.p.slice(this.i + 2, end < 0 ? this.p.length : end);
    this.emit(text.replace(/[^A-Za-z0-9]/g, (ch) => `\\${ch}`), 2 + text.length + (end < 0 ? 0 : 2));
  }

  private charClass(): void {
    this.emit('[', 1);
    if (this.p[this.i] === '^') this.emit('^', 1);
    if (this.p[this.i] === ']') this.emit('\\]', 1); // a leading ] is a member
    while (this.i < this.p.length && this.p[this.i] !== ']') {
      const c = this.p[this.i]!;
      const posix = c === '[' ? /^\[:\^?[a-z]+:\]/.exec(this.p.slice(this.i, this.i + 16)) : null;
      if (posix) this.emit(posix[0], posix[0].length);
      else if (c === '\\') this.escape(true);
      else if (c === '[') this.emit('\\[', 1);
      else this.emit(c, 1);
    }
    this.emit(']', 1);
  }
}

function byteEscape(code: number): string {
  if (!(code <= 0x7f)) throw new UnsupportedMatch('regex-non-ascii', 'regexes with escapes above U+007F are not translated (PCRE matches bytes here, RE2 characters)');
  return `\\x${code.toString(16).padStart(2, '0')}`;
}

/**
 * An RE2 rewrite string (Envoy's `regex_rewrite.substitution`: `\1`…`\9` for groups, `\\` for a
 * backslash) → an ngx.re.sub template (`${1}`, and `$$` for a literal `$`).
 */
export function rewriteTemplate(substitution: string): string {
  let out = '';
  for (let i = 0; i < substitution.length; i++) {
    const c = substitution[i]!;
    if (c === '$') out += '$$';
    else if (c !== '\\') out += c;
    else {
      const next = substitution[++i];
      if (next === '\\') out += '\\';
      else if (next !== undefined && /\d/.test(next)) out += `\${${next}}`;
      else throw new UnsupportedMatch('invalid-rewrite', `invalid rewrite string: \\${next ?? ''} (only \\0-\\9 and \\\\ escape)`);
    }
  }
  return out;
}
