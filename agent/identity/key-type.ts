import { shortQuote } from '../../cli/short-quote.js';

/** The workload key: RSA 2048 (Istio's default) or ECDSA P-256. */
export type WorkloadKeyType = 'rsa' | 'ecdsa';
export const WORKLOAD_KEY_TYPES: readonly WorkloadKeyType[] = ['rsa', 'ecdsa'];

/** pilot-agent's variables: ECDSA keys when ECC_SIGNATURE_ALGORITHM is "ECDSA", curve from ECC_CURVE. */
export const ECC_SIGNATURE_ALGORITHM_ENV = 'ECC_SIGNATURE_ALGORITHM';
export const ECC_CURVE_ENV = 'ECC_CURVE';

export class KeyTypeError extends Error {}

/**
 * The key type from `--key-type` (wins when given) or pilot-agent's environment. Istio's semantics
 * (security/pkg/pki/util/generate_csr.go): ECC_SIGNATURE_ALGORITHM empty or unset → RSA, exactly
 * "ECDSA" → ECDSA, any other value fails every CSR; ECC_CURVE "P384" → P-384, anything else P-256.
 * Here a value that would fail (or a P-384 curve, which the agent does not generate) is refused at
 * start instead of leaving the pod without a certificate.
 */
export function workloadKeyType(flag: string | undefined, env: NodeJS.ProcessEnv): WorkloadKeyType {
  if (flag !== undefined) {
    if (!(WORKLOAD_KEY_TYPES as readonly string[]).includes(flag)) throw new KeyTypeError(`--key-type: expected rsa or ecdsa, got ${shortQuote(flag)}`);
    return flag as WorkloadKeyType;
  }
  const algorithm = env[ECC_SIGNATURE_ALGORITHM_ENV] ?? '';
  if (algorithm === '') return 'rsa';
  if (algorithm !== 'ECDSA') throw new KeyTypeError(`${ECC_SIGNATURE_ALGORITHM_ENV}: expected ECDSA (or unset for RSA), got ${shortQuote(algorithm)}`);
  if (env[ECC_CURVE_ENV] === 'P384') throw new KeyTypeError(`${ECC_CURVE_ENV}: P384 is not supported, the agent generates P-256 keys (unset it or set P256)`);
  return 'ecdsa';
}
