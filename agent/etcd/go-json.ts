/**
 * The first JSON value of a request body, found and checked the way Go's encoding/json Decoder
 * does it (etcd's gateway reads bodies with one): trailing bytes after the first value are
 * ignored, and syntax errors carry Go's own wording, because etcd sends that text back to clients.
 */
export class GoJsonError extends Error {}

export interface FirstValue {
  /** undefined when the input holds only whitespace (Go's io.EOF). */
  text: string | undefined;
  /** Index just past the value. */
  end: number;
}

export function firstJsonValue(input: string, from = 0): FirstValue {
  const p = new Scanner(input, from);
  p.ws();
  if (p.i >= input.length) return { text: undefined, end: input.length };
  const start = p.i;
  p.value();
  return { text: input.slice(start, p.i), end: p.i };
}

function quoteChar(c: string): string {
  if (c === "'") return "'\\''";
  if (c === '"') return `'"'`;
  const q = JSON.stringify(c);
  return `'${q.slice(1, -1)}'`;
}

/**
 * Nesting limit, with the error of Go's encoding/json (`maxNestingDepth`, 10,000 there). Lower here
 * because this scanner recurses and the stack ends first; an etcd request nests at most a few deep.
 */
const MAX_DEPTH = 1_000;

class Scanner {
  private depth = 0;

  constructor(
    readonly s: string,
    public i: number,
  ) {}

  private fail(context: string): never {
    if (this.i >= this.s.length) throw new GoJsonError('unexpected EOF');
    throw new GoJsonError(`invalid character ${quoteChar(this.s[this.i]!)} ${context}`);
  }

  ws(): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') this.i++;
      else break;
    }
  }

  value(): void {
    const c = this.s[this.i];
    if (c === '{') return this.object();
    if (c === '[') return this.array();
    if (c === '"') return this.string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
    if (c === 't') return this.literal('true');
    if (c === 'f') return this.literal('false');
    if (c === 'n') return this.literal('null');
    this.fail('looking for beginning of value');
  }

  private literal(word: string): void {
    for (let k = 0; k < word.length; k++, this.i++) {
      if (this.s[this.i] !== word[k]) this.fail(`in literal ${word} (expecting ${quoteChar(word[k]!)})`);
    }
  }

  private object(): void {
    if (++this.depth > MAX_DEPTH) throw new GoJsonError('exceeded max depth');
    this.objectBody();
    this.depth--;
  }

  private array(): void {
    if (++this.depth > MAX_DEPTH) throw new GoJsonError('exceeded max depth');
    this.arrayBody();
    this.depth--;
  }

  private objectBody(): void {
    this.i++;
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return;
    }
    for (;;) {
      if (this.s[this.i] !== '"') this.fail('looking for beginning of object key string');
      this.string();
      this.ws();
      if (this.s[this.i] !== ':') this.fail('after object key');
      this.i++;
      this.ws();
      this.value();
      this.ws();
      const c = this.s[this.i];
      if (c === ',') {
        this.i++;
        this.ws();
        continue;
      }
      if (c === '}') {
        this.i++;
        return;
      }
      this.fail('after object key:value pair');
    }
  }

  private arrayBody(): void {
    this.i++;
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return;
    }
    for (;;) {
      this.value();
      this.ws();
      const c = this.s[this.i];
      if (c === ',') {
        this.i++;
        this.ws();
        continue;
      }
      if (c === ']') {
        this.i++;
        return;
      }
      this.fail('after array element');
    }
  }

  private string(): void {
    this.i++;
    for (;;) {
      const c = this.s[this.i];
      if (c === undefined) this.fail('in string literal');
      if (c === '"') {
        this.i++;
        return;
      }
      if (c < ' ') this.fail('in string literal');
      if (c === '\\') {
        this.i++;
        const e = this.s[this.i];
        if (e === 'u') {
          for (let k = 0; k < 4; k++) {
            this.i++;
            if (!/[0-9a-fA-F]/.test(this.s[this.i] ?? '')) this.fail('in \\u hexadecimal character escape');
          }
        } else if (e === undefined || !'"\\/bfnrt'.includes(e)) {
          this.fail('in string escape code');
        }
      }
      this.i++;
    }
  }

  private digits(context: string): void {
    if (!/[0-9]/.test(this.s[this.i] ?? '')) this.fail(context);
    while (/[0-9]/.test(this.s[this.i] ?? '')) this.i++;
  }

  private number(): void {
    if (this.s[this.i] === '-') {
      this.i++;
      if (!/[0-9]/.test(this.s[this.i] ?? '')) this.fail('in numeric literal');
    }
    if (this.s[this.i] === '0') this.i++;
    else this.digits('in numeric literal');
    if (this.s[this.i] === '.') {
      this.i++;
      this.digits('after decimal point in numeric literal');
    }
    if (this.s[this.i] === 'e' || this.s[this.i] === 'E') {
      this.i++;
      if (this.s[this.i] === '+' || this.s[this.i] === '-') this.i++;
      this.digits('in exponent of numeric literal');
    }
  }
}
