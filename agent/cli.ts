import type { Command } from 'commander';
import { registerAgentCommand } from './command.js';
import { registerEtcdCommand } from './etcd/command.js';

/** `apisix-mesh agent` and `apisix-mesh etcd`. */
export function registerAgentCommands(program: Command): void {
  registerAgentCommand(program);
  registerEtcdCommand(program);
}
