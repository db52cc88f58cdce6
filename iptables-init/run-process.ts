import { spawn } from 'node:child_process';

/** The one place this tool starts other programs; every run is counted and named in the log. */
export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Set when the program could not be started at all (e.g. ENOENT). */
  startError?: NodeJS.ErrnoException;
}

export type ProcessRunner = (file: string, args: readonly string[], stdin?: string) => Promise<ProcessResult>;

export function runProcess(file: string, args: readonly string[], stdin?: string): Promise<ProcessResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err: NodeJS.ErrnoException) => resolve({ code: null, stdout, stderr, startError: err }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    // A program that exits without reading its input must not crash us with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(stdin ?? '');
  });
}

/** Wraps a runner so that every program started is recorded, in order. */
export function countingRunner(inner: ProcessRunner): { run: ProcessRunner; started: string[] } {
  const started: string[] = [];
  return {
    started,
    run: (file, args, stdin) => {
      started.push([file, ...args].join(' '));
      return inner(file, args, stdin);
    },
  };
}
