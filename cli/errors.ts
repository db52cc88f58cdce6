/**
 * An error meant for the person at the terminal: printed as one line, without a stack trace, and
 * turned into the given exit status. Exit 2 is bad usage or unreadable input (nothing was done);
 * exit 1 is a refusal or failure of the work itself.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 2,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
