import { isIP } from 'node:net';
import { parseHostPort } from '../../cli/host-port.js';
import type { InjectionConfig } from '../config/injection-config.js';

/** The name istiod's own certificate carries (its Service's DNS name in istio-system). */
export const ISTIOD_SERVICE_NAME = 'istiod.istio-system.svc';

/**
 * The server name the agent must verify istiod's certificate against (`--xds-server-name`), or
 * undefined when that is the host it dials. istiod's certificate carries its Service's DNS names and
 * no address, so an `istiodAddress` that is an IP literal (an IPv6-only cluster's `[fd00::10]:15012`)
 * could never verify by its host; pilot-agent has the same limit and the same way out (ISTIOD_SAN).
 */
export function istiodServerName(config: Pick<InjectionConfig, 'istiodAddress' | 'istiodServerName'>): string | undefined {
  if (config.istiodServerName) return config.istiodServerName;
  const parsed = parseHostPort(config.istiodAddress);
  return 'host' in parsed && isIP(parsed.host) ? ISTIOD_SERVICE_NAME : undefined;
}
