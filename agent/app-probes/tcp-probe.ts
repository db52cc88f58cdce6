import { connect } from 'node:net';
import { failed, hostPort, type ProbeOutcome, type ProbeTarget } from './probe-target.js';

/** The kubelet's tcpSocket probe: the connection opens within the timeout. */
export function probeTcp(target: ProbeTarget, port: number, timeoutMs: number): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host: target.host, port, ...(target.localAddress ? { localAddress: target.localAddress } : {}) });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(failed(`tcp ${hostPort(target.host, port)}: no connection within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.end();
      socket.resume(); // whatever the app says first is not ours to read
      socket.once('close', () => undefined);
      resolve({ status: 200, detail: 'connected' });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(failed(`tcp ${hostPort(target.host, port)}: ${err.code ?? err.message}`));
    });
  });
}
