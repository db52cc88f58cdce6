import type { Command } from 'commander';
import { registerAgentCommand } from './command.js';
import { registerEtcdCommand } from './etcd/command.js';
import { registerWaitCommand } from './wait-command.js';

/** `apisix-mesh agent`, `apisix-mesh etcd` and `apisix-mesh wait` (the agent's postStart hook). */
export function registerAgentCommands(program: Command): void {
  registerAgentCommand(program);
  registerEtcdCommand(program);
  registerWaitCommand(program);
}
