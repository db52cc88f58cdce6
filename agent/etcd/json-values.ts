import { GoJsonError, firstJsonValue } from './go-json.js';

/** A JSON value in a streamed body grew past its bound before it ended. */
export class ValueTooLargeError extends Error {
  constructor(
    readonly size: number,
    readonly limit: number,
  ) {
    super(`grpc: received message larger than max (${size} vs. ${limit})`);
    this.name = 'ValueTooLargeError';
  }
}

export interface Split {
  /** Values completed by this chunk, in order: each is checked by firstJsonValue (Go's rules). */
  values: string[];
  /** What went wrong after those values, if anything. */
  error?: GoJsonError | ValueTooLargeError;
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const OPEN = new Set([0x7b, 0x5b]); // { [
const CLOSE = new Set([0x7d, 0x5d]); // } ]
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** Characters that end a top-level number or literal. */
const SCALAR_END = new Set([...WS, ...OPEN, ...CLOSE, QUOTE, 0x2c, 0x3a]);
const SCALAR_START = /^[-0-9tfn]$/;

/**
 * Splits a request body that arrives in chunks (a watch stream's requests) into its JSON values,
 * in linear time: a small state machine carried from chunk to chunk finds where a value ends
 * (nesting, strings, escapes) and looks at every character once; the pieces of an unfinished value
 * are kept, not re-joined and re-scanned, and bounded by `maxValueBytes`. Go's exact syntax errors
 * still come from firstJsonValue, run on each complete value and — so that a bad value is reported
 * early, as Go's decoder does — on an unfinished one each time it has doubled (O(n) in all).
 */
export class JsonValueSplitter {
  private pieces: string[] = [];
  private size = 0;
  private validatedAt = 0;
  private started = false;
  private scalar = false;
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(private readonly maxValueBytes: number) {}

  /** Is a value begun and not yet complete? */
  get pending(): boolean {
    return this.started;
  }

  push(chunk: string): Split {
    const values: string[] = [];
    let from = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (!this.started) {
        if (WS.has(c)) {
          from = i + 1;
          continue;
        }
        // Not the start of any JSON value: Go's error names the character.
        if (!this.begin(c)) return { values, error: this.syntaxError(chunk.slice(i, i + 1)) };
        from = i;
        continue;
      }
      if (this.scalar) {
        if (SCALAR_END.has(c)) {
          this.pieces.push(chunk.slice(from, i));
          const done = this.complete(values);
          if (done) return { values, error: done };
          i--; // this character starts whatever comes next
          from = i + 1;
        }
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) {
          this.inString = false;
          if (this.depth === 0) {
            this.pieces.push(chunk.slice(from, i + 1));
            const done = this.complete(values);
            if (done) return { values, error: done };
            from = i + 1;
          }
        }
        continue;
      }
      if (c === QUOTE) this.inString = true;
      else if (OPEN.has(c)) this.depth++;
      else if (CLOSE.has(c) && --this.depth === 0) {
        this.pieces.push(chunk.slice(from, i + 1));
        const done = this.complete(values);
        if (done) return { values, error: done };
        from = i + 1;
      }
    }
    if (this.started) {
      const rest = chunk.slice(from);
      this.pieces.push(rest);
      this.size += rest.length;
      if (this.size > this.maxValueBytes) return { values, error: new ValueTooLargeError(this.size, this.maxValueBytes) };
      if (this.size >= 2 * this.validatedAt) {
        const error = this.checkUnfinished();
        if (error) return { values, error };
      }
    }
    return { values };
  }

  /** The body ended: an unfinished value is Go's "unexpected EOF" (or its earlier syntax error). */
  end(): Split {
    if (!this.started) return { values: [] };
    const values: string[] = [];
    if (this.scalar) {
      const error = this.complete(values);
      return error ? { values, error } : { values };
    }
    try {
      firstJsonValue(this.pieces.join(''));
    } catch (err) {
      if (err instanceof GoJsonError) return { values, error: err };
      throw err;
    }
    return { values, error: new GoJsonError('unexpected EOF') };
  }

  private begin(c: number): boolean {
    if (OPEN.has(c)) this.depth = 1;
    else if (c === QUOTE) this.inString = true;
    else if (SCALAR_START.test(String.fromCharCode(c))) this.scalar = true;
    else return false;
    this.started = true;
    this.pieces = [];
    this.size = 0;
    this.validatedAt = 0;
    return true;
  }

  /** The pieces hold one whole value: check it, hand it on, start afresh. */
  private complete(values: string[]): GoJsonError | ValueTooLargeError | undefined {
    const text = this.pieces.join('');
    this.started = false;
    this.scalar = false;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    this.pieces = [];
    this.size = 0;
    if (text.length > this.maxValueBytes) return new ValueTooLargeError(text.length, this.maxValueBytes);
    try {
      const first = firstJsonValue(text);
      // A scalar may be followed by garbage Go reads as part of it (`tru` + `x`): its error wins.
      if (first.text !== undefined) values.push(first.text);
      return undefined;
    } catch (err) {
      if (err instanceof GoJsonError) return err;
      throw err;
    }
  }

  /** An unfinished value that is already wrong is reported now, not when it ends. */
  private checkUnfinished(): GoJsonError | undefined {
    const text = this.pieces.join('');
    this.pieces = [text];
    this.validatedAt = text.length;
    try {
      firstJsonValue(text);
    } catch (err) {
      if (err instanceof GoJsonError) return err.message === 'unexpected EOF' ? undefined : err;
      throw err;
    }
    return undefined;
  }

  private syntaxError(ch: string): GoJsonError {
    try {
      firstJsonValue(ch);
    } catch (err) {
      if (err instanceof GoJsonError) return err;
      throw err;
    }
    return new GoJsonError('unexpected EOF');
  }
}
