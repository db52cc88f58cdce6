import type { Command } from 'commander';
import { registerInjectCommand } from './inject-command.js';
import { registerWebhookCommand } from './server/command.js';

/** `apisix-mesh inject` and `apisix-mesh webhook`. */
export function registerWebhookCommands(program: Command): void {
  registerInjectCommand(program);
  registerWebhookCommand(program);
}
